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

export interface DecodeSpec {
  /** A video file (anything ffmpeg reads). */
  readonly input: string;
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
}

/**
 * Reads the output stream's size and rate from ffmpeg's stderr lines ("Output #0, rawvideo, ..." then
 * "Stream #0:0: Video: rawvideo (RGB[24] / 0x18424752), rgb24, 640x360, q=2-31, 138240 kb/s, 25 fps, ...").
 * The output's size is the one that matters: it is after rotation and scaling. Undefined until that line.
 */
export function parseDecodedStreamInfo(lines: readonly string[]): DecodedStreamInfo | undefined {
  let inOutput = false;
  let inputFps: number | undefined;
  for (const line of lines) {
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
    return { width: Number(size[1]), height: Number(size[2]), fps: fps ?? inputFps };
  }
  return undefined;
}

function frameRate(details: string): number | undefined {
  const match = /(\d+(?:\.\d+)?)(k?) (?:fps|tbr)\b/.exec(details);
  if (match === null) return undefined;
  const value = Number(match[1]) * (match[2] === "k" ? 1000 : 1);
  return value > 0 && value < 1000 ? value : undefined;
}
