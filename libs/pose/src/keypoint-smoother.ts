import { OneEuroFilter } from "1eurofilter";
import { requireAllFinite, requireLength, requireNonNegative, requirePositive, requirePositiveInteger } from "./argument-checks.js";

/** One-Euro filter settings (the proto's SmoothingOptions; the defaults are its documented ones). */
export interface SmoothingOptions {
  /** Minimum cutoff frequency in Hz: lower is smoother at rest. Default 1.0. */
  readonly minCutoff?: number;
  /** Speed coefficient: higher lags less on fast motion. Default 0.007. */
  readonly beta?: number;
  /** Cutoff for the derivative in Hz. Default 1.0. */
  readonly derivativeCutoff?: number;
  /** The frame rate assumed until two timestamps have been seen, in Hz. Default 30. */
  readonly frequency?: number;
}

/**
 * Smooths each person's keypoints over a stream with a One-Euro filter per coordinate (Casiez et al.
 * 2012), keyed by a track id. Timestamps are presentation timestamps in microseconds; the filter derives
 * its rate from them, so dropped frames do not distort it.
 */
export class KeypointSmoother {
  readonly numKeypoints: number;
  readonly minCutoff: number;
  readonly beta: number;
  readonly derivativeCutoff: number;
  readonly frequency: number;
  readonly #filters = new Map<number, OneEuroFilter[]>();

  constructor(numKeypoints: number, options: SmoothingOptions = {}) {
    requirePositiveInteger(numKeypoints, "numKeypoints");
    this.numKeypoints = numKeypoints;
    this.minCutoff = options.minCutoff ?? 1.0;
    this.beta = options.beta ?? 0.007;
    this.derivativeCutoff = options.derivativeCutoff ?? 1.0;
    this.frequency = options.frequency ?? 30;
    // The filter library only logs bad values to the console; refuse them here instead.
    requirePositive(this.minCutoff, "minCutoff");
    requireNonNegative(this.beta, "beta");
    requirePositive(this.derivativeCutoff, "derivativeCutoff");
    requirePositive(this.frequency, "frequency");
  }

  /**
   * Filters one person's keypoints [x0, y0, x1, y1, ...] seen at `ptsUs` into `out` (may be `keypoints`).
   * The first call for a key returns the keypoints unchanged.
   */
  smooth(key: number, keypoints: ArrayLike<number>, ptsUs: number | bigint, out: Float32Array = new Float32Array(2 * this.numKeypoints)): Float32Array {
    requireLength(keypoints, 2 * this.numKeypoints, "keypoints");
    requireAllFinite(keypoints, "keypoints");
    const seconds = Number(ptsUs) / 1e6;
    if (!Number.isFinite(seconds)) throw new RangeError(`ptsUs must be finite, got ${String(ptsUs)}`);
    let filters = this.#filters.get(key);
    if (filters === undefined) {
      filters = Array.from({ length: 2 * this.numKeypoints }, () => new OneEuroFilter(this.frequency, this.minCutoff, this.beta, this.derivativeCutoff));
      this.#filters.set(key, filters);
    }
    for (let i = 0; i < filters.length; i++) out[i] = (filters[i] as OneEuroFilter).filter(keypoints[i] as number, seconds);
    return out;
  }

  /** Drops the state of one key (a track that ended). */
  forget(key: number): void {
    this.#filters.delete(key);
  }

  /** Drops the state of every key not in `keys` (the tracks alive after this frame). */
  retain(keys: Iterable<number>): void {
    const alive = new Set(keys);
    for (const key of [...this.#filters.keys()]) if (!alive.has(key)) this.#filters.delete(key);
  }

  /** Keys with filter state. */
  get size(): number {
    return this.#filters.size;
  }
}
