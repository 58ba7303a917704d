import type { Size } from "./box.js";

/**
 * Where `encode` writes one instance's training target: straight into the trainer's batch tensors, so a
 * batch is filled without copies. Instance `index` occupies [index × size, (index + 1) × size) of each array,
 * where size is the product of the matching `targetShape` (and K for `weights`). Pass `subarray` views and
 * index 0 for any other layout.
 */
export interface EncodeDestination {
  /** One array per target tensor, in `targetShape` order. */
  readonly targets: readonly Float32Array[];
  /** Per-keypoint target weights, e.g. the batch's [N, K] tensor. */
  readonly weights: Float32Array;
  /** The instance's position in the batch. Default 0. */
  readonly index?: number;
}

/** One instance's training target; views into the destination arrays when `encode` was given them. */
export interface EncodedKeypoints {
  readonly targets: readonly Float32Array[];
  /** 1 (or the visibility, when in (0.5, 1)) for a joint that trains, 0 for one that must not. */
  readonly weights: Float32Array;
}

/** Where `decode` writes: instance `index` occupies [2K·index, 2K·(index + 1)) and [K·index, K·(index + 1)). */
export interface DecodeDestination {
  readonly keypoints: Float32Array;
  readonly scores: Float32Array;
  readonly index?: number;
}

/** One instance's keypoints; views into the destination arrays when `decode` was given them. */
export interface DecodedKeypoints {
  /** [x0, y0, x1, y1, ...] in model-input pixels. */
  readonly keypoints: Float32Array;
  /** The heatmap maximum (or the SimCC maximum, the smaller of x and y) per keypoint. */
  readonly scores: Float32Array;
}

/**
 * One object that builds the training target AND decodes the network output (mmpose's codec idea), so
 * the two can never disagree on scaling.
 *
 * Keypoints are flat [x0, y0, x1, y1, ...] in model-input pixels; visibility is one number per keypoint with
 * COCO's flags or a fraction: below 0.5 the joint is unlabelled (weight 0), above 1 it counts as 1. Every
 * coordinate must be finite, an unlabelled joint's too (COCO writes 0, 0): NaN throws a RangeError.
 *
 * Instances are not re-entrant: decode uses scratch buffers the codec owns. Make one codec per worker.
 */
export interface KeypointCodec {
  readonly kind: "msra-heatmap" | "udp-heatmap" | "simcc";
  readonly inputSize: Size;
  readonly numKeypoints: number;
  /** Shapes of one instance's target tensors, without the batch dimension: [[K, H, W]] or [[K, Wx], [K, Wy]]. */
  readonly targetShape: readonly (readonly number[])[];
  /** Shapes of one instance's network outputs, in the model's output order (the same as `targetShape` here). */
  readonly outputShape: readonly (readonly number[])[];
  /** Whether crops for this codec must come from `cropAffine(..., { udp: true })`, and keypoints go back with it. */
  readonly udp: boolean;
  encode(keypoints: ArrayLike<number>, visibility?: ArrayLike<number>, destination?: EncodeDestination): EncodedKeypoints;
  /** Decodes instance `index` of the outputs (one array per output, e.g. whole batch tensors). */
  decode(outputs: readonly Float32Array[], index?: number, destination?: DecodeDestination): DecodedKeypoints;
  /**
   * The flip test: maps the outputs of the horizontally mirrored crop back (pair swap included) and averages
   * them with the plain outputs, for instance `index` of both; returns one instance's merged outputs, ready
   * for `decode(merged)`.
   */
  mergeFlipTest(outputs: readonly Float32Array[], flippedOutputs: readonly Float32Array[], flipPermutation: Int32Array, index?: number): Float32Array[];
}
