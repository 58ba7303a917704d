/** The keypoints a model predicts and how they relate; indices refer to `names`. */
export interface KeypointSchema {
  /** "coco-17", or another schema's name. */
  readonly name: string;
  readonly names: readonly string[];
  /** Limbs to draw, as [from, to] index pairs. */
  readonly skeleton: readonly (readonly [number, number])[];
  /** Keypoints that swap when the image is mirrored, as [left, right] index pairs. */
  readonly flipPairs: readonly (readonly [number, number])[];
  /** Per-keypoint OKS sigmas (COCO's evaluation constants). */
  readonly sigmas: readonly number[];
}

/** COCO's 17 body keypoints, with the skeleton, flip pairs and OKS sigmas of the COCO keypoint task. */
export const COCO17: KeypointSchema = Object.freeze({
  name: "coco-17",
  names: Object.freeze([
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
  ]),
  // COCO's person category skeleton, converted from 1-based to 0-based indices.
  skeleton: Object.freeze(
    (
      [
        [16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9],
        [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7],
      ] as const
    ).map(([a, b]) => Object.freeze([a - 1, b - 1] as const)),
  ),
  flipPairs: Object.freeze(
    ([[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12], [13, 14], [15, 16]] as const).map((pair) => Object.freeze(pair)),
  ),
  sigmas: Object.freeze([0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89].map((s) => s / 10)),
});

/** Problems with a schema (empty when valid): indices in range, pairs distinct, one sigma per keypoint. */
export function schemaProblems(schema: KeypointSchema): string[] {
  const problems: string[] = [];
  const k = schema.names.length;
  if (k === 0) problems.push("a keypoint schema needs at least one keypoint");
  if (new Set(schema.names).size !== k) problems.push("keypoint names must be unique");
  if (schema.sigmas.length !== k) problems.push(`expected ${k} OKS sigmas, got ${schema.sigmas.length}`);
  if (schema.sigmas.some((sigma) => !(sigma > 0))) problems.push("OKS sigmas must be positive");
  const inRange = (i: number) => Number.isInteger(i) && i >= 0 && i < k;
  for (const [a, b] of schema.skeleton) if (!inRange(a) || !inRange(b)) problems.push(`limb [${a}, ${b}] is out of range`);
  const seen = new Set<number>();
  for (const [a, b] of schema.flipPairs) {
    if (!inRange(a) || !inRange(b) || a === b) problems.push(`flip pair [${a}, ${b}] is invalid`);
    if (seen.has(a) || seen.has(b)) problems.push(`keypoint in flip pair [${a}, ${b}] is paired twice`);
    seen.add(a);
    seen.add(b);
  }
  return problems;
}

/** For each keypoint, the index it swaps with under a horizontal flip (itself when unpaired). */
export function flipPermutation(schema: KeypointSchema): Int32Array {
  const permutation = Int32Array.from(schema.names, (_, i) => i);
  for (const [a, b] of schema.flipPairs) {
    permutation[a] = b;
    permutation[b] = a;
  }
  return permutation;
}
