import { extname } from "node:path";

/** Containers the annotated output can be written in, by file extension. */
export const VideoContainer = {
  /** H.264 in MP4 (or MOV, M4V, MKV): small, plays everywhere. */
  H264: "h264",
  /** An animated GIF with a palette made for the clip: for READMEs and issues. */
  GIF: "gif",
} as const;
export type VideoContainer = (typeof VideoContainer)[keyof typeof VideoContainer];

const CONTAINERS: Readonly<Record<string, VideoContainer>> = {
  ".mp4": "h264",
  ".m4v": "h264",
  ".mov": "h264",
  ".mkv": "h264",
  ".gif": "gif",
};

/** The container for an output path, or undefined for an extension we do not write. */
export function containerFor(path: string): VideoContainer | undefined {
  return CONTAINERS[extname(path).toLowerCase()];
}

export const VIDEO_EXTENSIONS = Object.freeze(Object.keys(CONTAINERS));

/**
 * What kind of thing a video source is, which decides how ffmpeg opens it: a file; a camera device
 * (/dev/video0, through Video4Linux2); a streaming URL whose frames come at the sender's pace (rtsp://,
 * rtmp://, srt://, udp://...); or an http(s):// URL, a file or a live stream (an MJPEG camera, HLS).
 */
export const SourceKind = {
  FILE: "file",
  DEVICE: "device",
  STREAM: "stream",
  HTTP: "http",
} as const;
export type SourceKind = (typeof SourceKind)[keyof typeof SourceKind];

const STREAMING_SCHEMES = new Set(["rtsp", "rtsps", "rtmp", "rtmps", "srt", "udp", "tcp", "rtp"]);

/** The kind of a source given on the command line; undefined for a URL scheme ffmpeg is not asked to open. */
export function sourceKind(input: string): SourceKind | undefined {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(input)?.[1]?.toLowerCase();
  if (scheme === undefined) return /^\/dev\/video\d+$/.test(input) ? "device" : "file";
  if (scheme === "http" || scheme === "https") return "http";
  return STREAMING_SCHEMES.has(scheme) ? "stream" : undefined;
}

/** Schemes `sourceKind` accepts, for error messages. */
export const SOURCE_SCHEMES = Object.freeze(["http", "https", ...STREAMING_SCHEMES]);

export interface DecodeSpec {
  /** A video file, a URL or a camera device (anything ffmpeg reads). */
  readonly input: string;
  /** How to open `input`; default "file". */
  readonly kind?: SourceKind;
  /** Scale to this width, keeping the aspect ratio (height rounded to even). */
  readonly width?: number;
  /** Resample to this frame rate (drop or repeat frames). */
  readonly fps?: number;
  /** Stop after this many frames. */
  readonly maxFrames?: number;
}

/**
 * Arguments that make ffmpeg decode a video's first video stream into packed RGB24 frames on stdout, one
 * width × height × 3 block per frame, audio and subtitles left out. Stream information goes to stderr
 * (the output stream's line gives the frame size and rate); -nostats keeps progress lines out of it and
 * -nostdin stops ffmpeg from reading the terminal.
 */
export function videoDecodeArgs(spec: DecodeSpec): string[] {
  const filters: string[] = [];
  if (spec.fps !== undefined) filters.push(`fps=${spec.fps}`);
  if (spec.width !== undefined) filters.push(`scale=${spec.width}:-2`);
  return [
    "-hide_banner",
    "-nostdin",
    "-nostats",
    ...inputArgs(spec.input, spec.kind ?? "file"),
    "-i",
    spec.input,
    "-map",
    "0:v:0",
    "-an",
    "-sn",
    ...(filters.length === 0 ? [] : ["-vf", filters.join(",")]),
    ...(spec.maxFrames === undefined ? [] : ["-frames:v", String(spec.maxFrames)]),
    "-f",
    "rawvideo",
    "-pix_fmt",
    "rgb24",
    "pipe:1",
  ];
}

/**
 * Input options per source kind. A camera is opened through Video4Linux2. RTSP goes over TCP: over UDP a
 * lost packet is a torn frame, and many networks drop UDP. Live inputs skip ffmpeg's input buffering, which
 * only adds latency to frames that come at their own pace anyway, and a streaming URL is probed for a second,
 * not five, before its first frame. An http(s) URL may be a file: it gets
 * reconnection (a long download that drops resumes), nothing that assumes it is live.
 */
function inputArgs(input: string, kind: SourceKind): string[] {
  switch (kind) {
    case "device":
      return ["-f", "v4l2", "-fflags", "nobuffer"];
    case "stream":
      // ffmpeg probes 5 s of a stream by default before the first frame; a second finds the video stream's size and rate.
      return [...(/^rtsps?:/i.test(input) ? ["-rtsp_transport", "tcp"] : []), "-fflags", "nobuffer", "-analyzeduration", "1000000"];
    case "http":
      return ["-reconnect", "1", "-reconnect_streamed", "1", "-reconnect_delay_max", "5"];
    case "file":
      return [];
  }
}

export interface EncodeSpec {
  readonly output: string;
  readonly width: number;
  readonly height: number;
  readonly fps: number;
  readonly container: VideoContainer;
}

/**
 * Arguments that make ffmpeg read packed RGB24 frames of one size from stdin and write `output`, replacing
 * it. H.264 needs even sizes in yuv420p (the pixel format players support), so odd frames get one black
 * row or column; +faststart puts the index first so the file plays while it downloads. A GIF gets a
 * palette computed from the whole clip, which keeps skeleton colours true.
 */
export function videoEncodeArgs(spec: EncodeSpec): string[] {
  const input = [
    "-hide_banner",
    "-nostdin",
    "-loglevel",
    "error",
    "-y",
    "-f",
    "rawvideo",
    "-pix_fmt",
    "rgb24",
    "-s",
    `${spec.width}x${spec.height}`,
    "-r",
    String(spec.fps),
    "-i",
    "pipe:0",
  ];
  const codec =
    spec.container === "gif"
      ? ["-vf", "split[a][b];[a]palettegen=stats_mode=diff[p];[b][p]paletteuse=dither=bayer:bayer_scale=3", "-loop", "0"]
      : ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p", "-movflags", "+faststart"];
  return [...input, ...codec, spec.output];
}

/** What ffmpeg's stream lines on stderr tell about the decoded frames. */
export interface DecodedStreamInfo {
  readonly width: number;
  readonly height: number;
  /** Frames per second; undefined when ffmpeg did not say. */
  readonly fps: number | undefined;
  /** The input's duration in seconds; undefined for a live source ("Duration: N/A") or when ffmpeg did not say. */
  readonly durationSeconds: number | undefined;
}

/**
 * Reads the output stream's size and rate from ffmpeg's stderr lines ("Output #0, rawvideo, ..." then
 * "Stream #0:0: Video: rawvideo (RGB[24] / 0x18424752), rgb24, 640x360, q=2-31, 138240 kb/s, 25 fps, ...").
 * The output's size is the one that matters: it is after rotation and scaling. Undefined until that line.
 */
export function parseDecodedStreamInfo(lines: readonly string[]): DecodedStreamInfo | undefined {
  let inOutput = false;
  let inputFps: number | undefined;
  let durationSeconds: number | undefined;
  for (const line of lines) {
    const duration = /^\s*Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)/.exec(line);
    if (duration !== null && !inOutput) durationSeconds ??= Number(duration[1]) * 3600 + Number(duration[2]) * 60 + Number(duration[3]);
    if (/^Output #0\b/.test(line.trim())) {
      inOutput = true;
      continue;
    }
    const video = /Stream #\d+:\d+.*?: Video: (.*)$/.exec(line);
    if (video === null) continue;
    const details = video[1]!;
    const fps = frameRate(details);
    if (!inOutput) {
      inputFps ??= fps;
      continue;
    }
    const size = /(?:^|[ ,])(\d{1,5})x(\d{1,5})(?=[ ,[]|$)/.exec(details);
    if (size === null) return undefined;
    return { width: Number(size[1]), height: Number(size[2]), fps: fps ?? inputFps, durationSeconds };
  }
  return undefined;
}

function frameRate(details: string): number | undefined {
  const match = /(\d+(?:\.\d+)?)(k?) (?:fps|tbr)\b/.exec(details);
  if (match === null) return undefined;
  const value = Number(match[1]) * (match[2] === "k" ? 1000 : 1);
  return value > 0 && value < 1000 ? value : undefined;
}
