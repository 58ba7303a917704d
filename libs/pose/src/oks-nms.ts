import { requireAllFinite, requireFinite, requireLength, requireNonNegative } from "./argument-checks.js";
import { COCO17 } from "./keypoint-schema.js";
import { FLOAT64_SPACING_1, oksVariances } from "./oks.js";
import { pairwiseSum } from "./pairwise-sum.js";

/** One pose candidate of an image: [x, y, score] × K keypoints, its instance score and its area (e.g. the crop's). */
export interface OksNmsCandidate {
  readonly keypoints: ArrayLike<number>;
  readonly score: number;
  readonly area: number;
}

export interface OksNmsOptions {
  /** Per-keypoint OKS sigmas. Default: COCO-17's. */
  readonly sigmas?: readonly number[];
  /**
   * Only keypoints scoring above this in both candidates count. Default: all keypoints (HRNet's default call).
   * HRNet's `oks_iou` meant the same with `in_vis_thre` but, through Python's `and` on two lists, tests only
   * the lower-ranked candidate's scores; both are tested here.
   */
  readonly visibilityThreshold?: number;
}

/**
 * Greedy OKS non-maximum suppression as HRNet's `oks_nms`: take the best-scoring candidate, drop every
 * remaining one whose OKS with it exceeds `threshold` (the scale being the mean of their areas), repeat.
 * Returns the indices kept, best first; equal scores keep input order.
 */
export function oksNms(candidates: readonly OksNmsCandidate[], threshold: number, options: OksNmsOptions = {}): number[] {
  requireFinite(threshold, "threshold");
  const sigmas = options.sigmas ?? COCO17.sigmas;
  const k = sigmas.length;
  candidates.forEach((candidate, i) => {
    requireLength(candidate.keypoints, 3 * k, `candidates[${i}].keypoints`);
    requireAllFinite(candidate.keypoints, `candidates[${i}].keypoints`);
    requireFinite(candidate.score, `candidates[${i}].score`);
    requireNonNegative(candidate.area, `candidates[${i}].area`);
  });
  const variances = oksVariances(sigmas);
  const scratch = new Float64Array(k);
  const visibility = options.visibilityThreshold;
  let order = candidates.map((_, i) => i).sort((a, b) => (candidates[b] as OksNmsCandidate).score - (candidates[a] as OksNmsCandidate).score || a - b);
  const keep: number[] = [];
  while (order.length > 0) {
    const best = order[0] as number;
    keep.push(best);
    const kept = candidates[best] as OksNmsCandidate;
    order = order.slice(1).filter((other) => {
      const candidate = candidates[other] as OksNmsCandidate;
      return pairOks(kept, candidate, variances, visibility, scratch) <= threshold;
    });
  }
  return keep;
}

function pairOks(a: OksNmsCandidate, b: OksNmsCandidate, variances: Float64Array, visibility: number | undefined, scratch: Float64Array): number {
  const scale = (a.area + b.area) / 2 + FLOAT64_SPACING_1;
  let n = 0;
  for (let j = 0; j < variances.length; j++) {
    if (visibility !== undefined && !((a.keypoints[3 * j + 2] as number) > visibility && (b.keypoints[3 * j + 2] as number) > visibility)) continue;
    const dx = (b.keypoints[3 * j] as number) - (a.keypoints[3 * j] as number);
    const dy = (b.keypoints[3 * j + 1] as number) - (a.keypoints[3 * j + 1] as number);
    scratch[n++] = Math.exp(-((dx * dx + dy * dy) / (variances[j] as number) / scale / 2));
  }
  return n === 0 ? 0 : pairwiseSum(scratch, 0, n) / n;
}
