import { readdir, readFile } from "node:fs/promises";
import { basename, extname, join } from "node:path";
import { AppError, Code } from "@poseloop/core";
import { renderSyntheticScene, SeededRandom } from "@poseloop/data";
import { decodeImage, type RgbImage } from "@poseloop/vision";
import type { FrameInput } from "@poseloop/client";
import { performance } from "node:perf_hooks";
import type { SourceKind } from "./ffmpeg-args.js";
import { VideoFrameReader } from "./ffmpeg-video.js";

/** One frame of a source: what is sent, and its pixels for the annotated output. */
export interface SourceFrame {
  /** 1, 2, 3...: the frame id sent and the number printed. */
  readonly number: number;
  readonly ptsUs: number;
  readonly input: FrameInput;
  /** The file a frame came from (image folders). */
  readonly name?: string;
  /** The frame's pixels (decoded on demand for encoded images). */
  picture(): Promise<RgbImage>;
}

export interface FrameSource {
  /** "video clip.mp4 (640x360, 25 fps)", for the first line of output. */
  readonly description: string;
  /** The rate frames are timed at (pts) and the annotated video is written at. */
  readonly fps: number;
  /**
   * A camera or live stream: frames come at the sender's pace and are read as they come; a consumer slower
   * than the source gets the newest frame, and the ones it missed are counted in `skipped`.
   */
  readonly live?: boolean;
  /** Frames of a live source replaced by a newer one before they were pulled. */
  skipped?(): number;
  /** Frames one at a time, read as they are pulled. */
  frames(): AsyncGenerator<SourceFrame, void, undefined>;
  close(): Promise<void>;
}

export const IMAGE_EXTENSIONS = Object.freeze([".jpg", ".jpeg", ".png", ".webp"]);

const ptsOf = (index: number, fps: number): number => Math.round((index * 1_000_000) / fps);

/**
 * A video decoded by ffmpeg into raw RGB frames: a file, a camera device or a URL (`kind`, default "file"). A
 * camera, a streaming URL and an http(s) URL without a duration (an MJPEG camera, a live HLS stream) are live:
 * see FrameSource.live; their frames are timed by the clock they arrive by, and they end when the sender stops
 * or the command is interrupted.
 */
export async function openVideoSource(
  path: string,
  shown: string,
  options: { ffmpeg: string; kind?: SourceKind; width?: number; fps?: number; maxFrames?: number; signal?: AbortSignal },
): Promise<FrameSource> {
  const kind = options.kind ?? "file";
  const reader = await VideoFrameReader.open(
    options.ffmpeg,
    {
      input: path,
      kind,
      ...(options.width === undefined ? {} : { width: options.width }),
      ...(options.fps === undefined ? {} : { fps: options.fps }),
      ...(options.maxFrames === undefined ? {} : { maxFrames: options.maxFrames }),
    },
    options.signal === undefined ? {} : { signal: options.signal },
  );
  const { width, height } = reader.info;
  const fps = options.fps ?? reader.info.fps ?? 25;
  const live = kind === "device" || kind === "stream" || (kind === "http" && reader.info.durationSeconds === undefined);
  if (live) {
    const latest = new LatestFrame(reader.frames(), options.signal);
    return {
      description: `live ${kind === "device" ? "camera" : "stream"} ${shown} (${width}x${height}, ${Number(fps.toFixed(2))} fps)`,
      fps,
      live: true,
      skipped: () => latest.skipped,
      async *frames() {
        let number = 0;
        for await (const { data, ptsUs } of latest.frames()) {
          const image: RgbImage = { width, height, data };
          number++;
          yield { number, ptsUs, input: { raw: { width, height, data, format: "rgb8" } }, picture: async () => image };
        }
      },
      close: () => reader.close(),
    };
  }
  return {
    description: `video ${shown} (${width}x${height}, ${Number(fps.toFixed(2))} fps)`,
    fps,
    async *frames() {
      let index = 0;
      for await (const data of reader.frames()) {
        const image: RgbImage = { width, height, data };
        index++;
        yield { number: index, ptsUs: ptsOf(index - 1, fps), input: { raw: { width, height, data, format: "rgb8" } }, picture: async () => image };
      }
    },
    close: () => reader.close(),
  };
}

/**
 * The newest frame of a live source. The source is read as fast as it sends, whatever the consumer's pace:
 * a camera does not wait, and its frames queued behind a slow consumer would only add latency. A frame not
 * yet pulled when a newer one arrives is replaced and counted in `skipped`. Timestamps are the arrival time
 * since the first frame, the only clock a live source shares with the smoother.
 */
export class LatestFrame {
  skipped = 0;
  #latest: { data: Uint8Array; ptsUs: number } | undefined;
  #wake: (() => void) | undefined;
  #done = false;
  #error: Error | undefined;

  /** `signal` ends the frames at once (Ctrl-C), even while a stalled source sends nothing. */
  constructor(frames: AsyncIterable<Uint8Array>, signal?: AbortSignal) {
    void this.#pump(frames);
    signal?.addEventListener(
      "abort",
      () => {
        this.#done = true;
        this.#latest = undefined;
        this.#notify();
      },
      { once: true },
    );
  }

  async *frames(): AsyncGenerator<{ data: Uint8Array; ptsUs: number }, void, undefined> {
    for (;;) {
      const frame = this.#latest;
      if (frame !== undefined) {
        this.#latest = undefined;
        yield frame;
        continue;
      }
      if (this.#error !== undefined && this.#done) throw this.#error;
      if (this.#done) return;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  async #pump(frames: AsyncIterable<Uint8Array>): Promise<void> {
    let start: number | undefined;
    try {
      for await (const data of frames) {
        if (this.#done) return;
        const now = performance.now();
        start ??= now;
        if (this.#latest !== undefined) this.skipped++;
        this.#latest = { data, ptsUs: Math.round((now - start) * 1000) };
        this.#notify();
      }
    } catch (error) {
      this.#error = error instanceof Error ? error : new Error(String(error));
    } finally {
      this.#done = true;
      this.#notify();
    }
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}

/** The images of a folder in natural name order ("2.jpg" before "10.jpg"), sent as they are encoded. */
export async function openImageFolder(path: string, shown: string, options: { fps: number; maxFrames?: number }): Promise<FrameSource> {
  let names: string[];
  try {
    names = (await readdir(path, { withFileTypes: true }))
      .filter((entry) => entry.isFile() && IMAGE_EXTENSIONS.includes(extname(entry.name).toLowerCase()))
      .map((entry) => entry.name);
  } catch (error) {
    throw new AppError(Code.NOT_FOUND, `cannot list image folder ${shown}: ${(error as Error).message}`, { cause: error });
  }
  if (names.length === 0) throw new AppError(Code.INVALID_ARGUMENT, `${shown} has no JPEG, PNG or WebP images`);
  const collator = new Intl.Collator("en", { numeric: true });
  names.sort((a, b) => collator.compare(a, b));
  const selected = options.maxFrames === undefined ? names : names.slice(0, options.maxFrames);
  return {
    description: `${selected.length} images from ${shown} at ${options.fps} fps`,
    fps: options.fps,
    async *frames() {
      for (const [index, name] of selected.entries()) {
        const bytes = await readFile(join(path, name));
        let picture: Promise<RgbImage> | undefined;
        yield {
          number: index + 1,
          ptsUs: ptsOf(index, options.fps),
          input: { encoded: bytes },
          name: basename(name),
          picture: () => (picture ??= decodeImage(bytes)),
        };
      }
    },
    close: async () => undefined,
  };
}

export interface SyntheticSourceOptions {
  readonly width: number;
  readonly height: number;
  readonly frames: number;
  readonly fps: number;
  readonly seed: number;
  /** Most people per frame. */
  readonly people: number;
}

/**
 * Frames rendered by @poseloop/data's synthetic humanoid generator: each frame its own deterministic scene
 * from (seed, frame number), the same pictures on every run.
 */
export function syntheticSource(options: SyntheticSourceOptions): FrameSource {
  const { width, height } = options;
  return {
    description: `${options.frames} synthetic frames ${width}x${height} (seed ${options.seed}) at ${options.fps} fps`,
    fps: options.fps,
    async *frames() {
      for (let index = 0; index < options.frames; index++) {
        const scene = renderSyntheticScene(new SeededRandom(options.seed, index), { width, height, minPeople: 1, maxPeople: options.people });
        const image = scene.image;
        yield {
          number: index + 1,
          ptsUs: ptsOf(index, options.fps),
          input: { raw: { width, height, data: image.data, format: "rgb8" } },
          picture: async () => image,
        };
        // Rendering is synchronous: let results and Ctrl-C in between frames.
        await new Promise((resolve) => setImmediate(resolve));
      }
    },
    close: async () => undefined,
  };
}
