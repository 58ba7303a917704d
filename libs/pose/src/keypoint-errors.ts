import type { CocoKeypointDetection, CocoKeypointGroundTruth } from "./coco-keypoint-eval.js";
import type { KeypointSchema } from "./keypoint-schema.js";
import { keypointOks, oksTerm, oksVariances } from "./oks.js";

/** How well one keypoint type was found, over every labelled instance of it that a detection matched. */
export interface KeypointErrorStats {
  readonly name: string;
  /** Labelled (v > 0) instances of this keypoint on matched people. */
  readonly labelled: number;
  /** Mean of the keypoint's own OKS term, exp(−d² / (2·area·(2σ)²)): 1 is exact. */
  readonly meanOks: number;
  /** Fraction whose OKS term is under 0.5: the keypoint is off by more than its tolerance. */
  readonly missRate: number;
  /** Fraction of misses that sit nearer the flip partner's true position: left and right swapped. */
  readonly swapRate: number;
}

export interface KeypointErrorReport {
  readonly keypoints: readonly KeypointErrorStats[];
  /** People (not crowd, with labelled keypoints) that a detection matched. */
  readonly matched: number;
  /** People no detection of their image matched. */
  readonly unmatched: number;
}

/**
 * Where a model's keypoints go wrong, per keypoint type: COCO AP says how often whole people are found, this
 * says which joints miss and whether the misses are left/right swaps (a keypoint predicted at its flip
 * partner's place) — the error a top-down model makes when it misjudges which way a person faces. Each
 * ground-truth person is matched, within its image, to the unused detection with the highest OKS (greedy,
 * best pairs first); crowd regions and people without labelled keypoints are skipped.
 */
export function keypointErrors(
  groundTruths: readonly CocoKeypointGroundTruth[],
  detections: readonly Pick<CocoKeypointDetection, "image_id" | "keypoints">[],
  schema: KeypointSchema,
): KeypointErrorReport {
  const k = schema.names.length;
  const variances = oksVariances(schema.sigmas);
  const partner = new Int32Array(k).fill(-1);
  for (const [a, b] of schema.flipPairs) {
    partner[a] = b;
    partner[b] = a;
  }
  const byImage = new Map<number, { people: CocoKeypointGroundTruth[]; detections: ArrayLike<number>[] }>();
  const entry = (imageId: number) => {
    let e = byImage.get(imageId);
    if (e === undefined) byImage.set(imageId, (e = { people: [], detections: [] }));
    return e;
  };
  for (const gt of groundTruths) {
    if (gt.iscrowd === true || gt.iscrowd === 1 || gt.num_keypoints === 0) continue;
    let labelled = false;
    for (let j = 0; j < k; j++) if ((gt.keypoints[3 * j + 2] as number) > 0) labelled = true;
    if (labelled) entry(gt.image_id).people.push(gt);
  }
  for (const d of detections) byImage.get(d.image_id)?.detections.push(d.keypoints);

  const sums = { oks: new Float64Array(k), labelled: new Float64Array(k), misses: new Float64Array(k), swaps: new Float64Array(k) };
  let matched = 0;
  let unmatched = 0;
  for (const { people, detections: found } of byImage.values()) {
    const pairs: { gt: number; det: number; oks: number }[] = [];
    people.forEach((gt, g) => found.forEach((det, d) => pairs.push({ gt: g, det: d, oks: keypointOks(det, gt, schema.sigmas) })));
    pairs.sort((a, b) => b.oks - a.oks);
    const gtUsed = new Set<number>();
    const detUsed = new Set<number>();
    for (const { gt: g, det: d } of pairs) {
      if (gtUsed.has(g) || detUsed.has(d)) continue;
      gtUsed.add(g);
      detUsed.add(d);
      const gt = people[g] as CocoKeypointGroundTruth;
      const det = found[d] as ArrayLike<number>;
      // Keypoint j's OKS term measured against the truth of keypoint `target` (itself, or its flip partner).
      const term = (j: number, target: number): number =>
        oksTerm((det[3 * j] as number) - (gt.keypoints[3 * target] as number), (det[3 * j + 1] as number) - (gt.keypoints[3 * target + 1] as number), variances[j] as number, gt.area);
      for (let j = 0; j < k; j++) {
        if (!((gt.keypoints[3 * j + 2] as number) > 0)) continue;
        const oks = term(j, j);
        sums.oks[j] = (sums.oks[j] as number) + oks;
        sums.labelled[j] = (sums.labelled[j] as number) + 1;
        if (oks >= 0.5) continue;
        sums.misses[j] = (sums.misses[j] as number) + 1;
        const m = partner[j] as number;
        if (m >= 0 && (gt.keypoints[3 * m + 2] as number) > 0 && term(j, m) > oks) sums.swaps[j] = (sums.swaps[j] as number) + 1;
      }
    }
    matched += gtUsed.size;
    unmatched += people.length - gtUsed.size;
  }
  const keypoints = schema.names.map((name, j) => {
    const labelled = sums.labelled[j] as number;
    const misses = sums.misses[j] as number;
    return {
      name,
      labelled,
      meanOks: labelled === 0 ? Number.NaN : (sums.oks[j] as number) / labelled,
      missRate: labelled === 0 ? Number.NaN : misses / labelled,
      swapRate: misses === 0 ? 0 : (sums.swaps[j] as number) / misses,
    };
  });
  return { keypoints, matched, unmatched };
}
