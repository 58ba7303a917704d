import { requireAllFinite, requireLength, requireNonNegative } from "./argument-checks.js";
import { pairwiseSum } from "./pairwise-sum.js";

// numpy's np.spacing(1): pycocotools adds it to the area so a zero area does not divide by zero.
export const FLOAT64_SPACING_1 = 2.220446049250313e-16;

/** A ground-truth person for OKS: COCO's [x, y, v] × K keypoints, its segment area and its [x, y, w, h] box. */
export interface OksGroundTruth {
  readonly keypoints: ArrayLike<number>;
  readonly area: number;
  /** Needed only when no keypoint is labelled (v > 0): then distances are measured to the box doubled around itself. */
  readonly bbox?: ArrayLike<number>;
}

/** (2σ)² per keypoint, as pycocotools' `vars`. */
export function oksVariances(sigmas: readonly number[]): Float64Array {
  return Float64Array.from(sigmas, (sigma) => sigma * 2 * (sigma * 2));
}

/**
 * One keypoint's term of COCO's OKS: exp(−d² / (2σ)² / (area + ε) / 2) for the offset (dx, dy), with
 * `variance` = (2σ)² (oksVariances), in pycocotools' order of operations.
 */
export function oksTerm(dx: number, dy: number, variance: number, area: number): number {
  return Math.exp(-((dx * dx + dy * dy) / variance / (area + FLOAT64_SPACING_1) / 2));
}

/**
 * COCO's object keypoint similarity exactly as pycocotools' computeOks: the mean over labelled keypoints
 * (v > 0) of exp(−d² / (2σ)² / (area + ε) / 2) — note the (2σ)² and the extra /2, COCO's definition. A ground
 * truth with no labelled keypoint compares every detected keypoint with the box doubled around the GT box
 * (distance 0 inside). Arguments are checked by the callers; `scratch` holds K values.
 */
export function cocoOks(
  detection: ArrayLike<number>,
  detectionOffset: number,
  groundTruth: ArrayLike<number>,
  area: number,
  bbox: ArrayLike<number> | undefined,
  variances: Float64Array,
  scratch: Float64Array,
): number {
  const k = variances.length;
  let labelled = 0;
  for (let j = 0; j < k; j++) if ((groundTruth[3 * j + 2] as number) > 0) labelled++;
  let n = 0;
  if (labelled > 0) {
    for (let j = 0; j < k; j++) {
      if (!((groundTruth[3 * j + 2] as number) > 0)) continue;
      const dx = (detection[detectionOffset + 3 * j] as number) - (groundTruth[3 * j] as number);
      const dy = (detection[detectionOffset + 3 * j + 1] as number) - (groundTruth[3 * j + 1] as number);
      scratch[n++] = oksTerm(dx, dy, variances[j] as number, area);
    }
  } else {
    if (bbox === undefined) throw new RangeError("a ground truth without labelled keypoints needs its bbox for OKS");
    const bx = bbox[0] as number;
    const by = bbox[1] as number;
    const bw = bbox[2] as number;
    const bh = bbox[3] as number;
    const x0 = bx - bw;
    const x1 = bx + bw * 2;
    const y0 = by - bh;
    const y1 = by + bh * 2;
    for (let j = 0; j < k; j++) {
      const xd = detection[detectionOffset + 3 * j] as number;
      const yd = detection[detectionOffset + 3 * j + 1] as number;
      const dx = Math.max(0, x0 - xd) + Math.max(0, xd - x1);
      const dy = Math.max(0, y0 - yd) + Math.max(0, yd - y1);
      scratch[n++] = oksTerm(dx, dy, variances[j] as number, area);
    }
  }
  return pairwiseSum(scratch, 0, n) / n;
}

/**
 * OKS between one detection ([x, y, score] × K, COCO's result layout) and one ground truth, as COCO
 * evaluation defines it (see `cocoOks`). Throws a RangeError for mismatched lengths, NaN or a negative area.
 */
export function keypointOks(detection: ArrayLike<number>, groundTruth: OksGroundTruth, sigmas: readonly number[]): number {
  const k = sigmas.length;
  requireLength(detection, 3 * k, "detection keypoints");
  requireLength(groundTruth.keypoints, 3 * k, "ground-truth keypoints");
  requireAllFinite(detection, "detection keypoints");
  requireAllFinite(groundTruth.keypoints, "ground-truth keypoints");
  requireNonNegative(groundTruth.area, "ground-truth area");
  if (groundTruth.bbox !== undefined) {
    requireLength(groundTruth.bbox, 4, "ground-truth bbox");
    requireAllFinite(groundTruth.bbox, "ground-truth bbox");
  }
  return cocoOks(detection, 0, groundTruth.keypoints, groundTruth.area, groundTruth.bbox, oksVariances(sigmas), new Float64Array(k));
}
