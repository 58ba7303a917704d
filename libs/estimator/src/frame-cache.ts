import { readFile } from "node:fs/promises";
import { decodeImage } from "@poseloop/vision";
import type { FrameImage } from "./frame-job.js";

export interface DecodedFrameCacheOptions {
  /** Decoded bytes kept at most; pictures past it are read and decoded on every evaluation. */
  readonly maxBytes: number;
  /** Largest picture decoded, as the estimator's maxPixels. */
  readonly maxPixels: number;
}

/**
 * Validation pictures kept decoded between evaluations of the same set. A training run validates every epoch
 * on the same pictures; decoding their JPEGs again each time costs more than running the model on them (the
 * synthetic demo: ~5 ms a picture against ~2 ms of inference with the flip test). Pictures are decoded with the
 * estimator's own decoder and handed to it as raw RGB8, so the keypoints and the AP are the same as from the
 * file's bytes. Pictures are kept in the order asked for until the first that does not fit in `maxBytes`; from
 * then on the cache only reads files, so the same pictures are kept every epoch and at most one picture in a run
 * is decoded both here and by the estimator. A picture that does not decode is not kept, and goes to the
 * estimator as bytes, which reports the failure as it always does.
 */
export class DecodedFrameCache {
  readonly #options: DecodedFrameCacheOptions;
  readonly #frames = new Map<string, FrameImage>();
  #bytes = 0;
  /** A picture did not fit: no more decoding here. */
  #full = false;

  constructor(options: DecodedFrameCacheOptions) {
    this.#options = options;
  }

  /** Decoded bytes held. */
  get bytes(): number {
    return this.#bytes;
  }

  /** The picture at `path`: decoded when it is kept (or, until the cache is full, now fits), its file's bytes otherwise. */
  async frame(path: string): Promise<FrameImage> {
    const kept = this.#frames.get(path);
    if (kept !== undefined) return kept;
    const data = await readFile(path);
    if (this.#full) return { kind: "encoded", data };
    let decoded;
    try {
      decoded = await decodeImage(data, { maxPixels: this.#options.maxPixels });
    } catch {
      return { kind: "encoded", data };
    }
    if (this.#bytes + decoded.data.length > this.#options.maxBytes) {
      this.#full = true;
      return { kind: "encoded", data };
    }
    const frame: FrameImage = { kind: "raw", width: decoded.width, height: decoded.height, format: "RGB8", stride: 3 * decoded.width, data: decoded.data };
    this.#frames.set(path, frame);
    this.#bytes += decoded.data.length;
    return frame;
  }
}
