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

const frozenPairs = (pairs: readonly (readonly [number, number])[]): readonly (readonly [number, number])[] => Object.freeze(pairs.map((pair) => Object.freeze([pair[0], pair[1]] as const)));

/**
 * The OKS sigma BlazePose-33 landmarks without a COCO counterpart get (eye corners, mouth, hand and foot
 * points): COCO's wrist sigma, the tightest of the limb ends, so a landmark on the hand or foot is judged about as
 * strictly as the wrist it hangs from. Nobody publishes sigmas for these landmarks.
 */
export const BLAZEPOSE_DEFAULT_SIGMA = 0.062;

/**
 * MediaPipe's BlazePose GHUM 33 landmarks in MediaPipe's order, with its POSE_CONNECTIONS as the skeleton. The 12
 * landmarks COCO also annotates (nose, eyes, ears, shoulders ... ankles) take COCO's sigmas, the rest
 * BLAZEPOSE_DEFAULT_SIGMA.
 */
export const BLAZEPOSE33: KeypointSchema = (() => {
  const names = [
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_pinky", "right_pinky", "left_index", "right_index",
    "left_thumb", "right_thumb", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
  ];
  const cocoSigma = new Map(COCO17.names.map((name, i) => [name, COCO17.sigmas[i] as number]));
  return Object.freeze({
    name: "blazepose-33",
    names: Object.freeze(names),
    skeleton: frozenPairs([
      [0, 1], [1, 2], [2, 3], [3, 7], [0, 4], [4, 5], [5, 6], [6, 8], [9, 10], [11, 12], [11, 13], [13, 15],
      [15, 17], [15, 19], [15, 21], [17, 19], [12, 14], [14, 16], [16, 18], [16, 20], [16, 22], [18, 20], [11, 23],
      [12, 24], [23, 24], [23, 25], [24, 26], [25, 27], [26, 28], [27, 29], [28, 30], [29, 31], [30, 32], [27, 31],
      [28, 32],
    ]),
    flipPairs: frozenPairs([[1, 4], [2, 5], [3, 6], [7, 8], [9, 10], [11, 12], [13, 14], [15, 16], [17, 18], [19, 20], [21, 22], [23, 24], [25, 26], [27, 28], [29, 30], [31, 32]]),
    sigmas: Object.freeze(names.map((name) => cocoSigma.get(name) ?? BLAZEPOSE_DEFAULT_SIGMA)),
  });
})();

/**
 * COCO-WholeBody's 133 keypoints: COCO's 17 body keypoints, 6 foot, 68 face (face-0 ... face-67, the 300-W
 * layout) and 21 per hand (left, then right), with the per-keypoint sigmas of the COCO-WholeBody evaluation
 * (jin-s13/COCO-WholeBody, myeval_wholebody.py) and the skeleton MMPose draws (body, feet to the ankles, fingers
 * to the wrists; face points unconnected).
 */
export const COCO_WHOLEBODY133: KeypointSchema = (() => {
  const feet = ["left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel"];
  const face = Array.from({ length: 68 }, (_, i) => `face-${i}`);
  const fingers = ["thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger"];
  const hand = (side: string): string[] => [`${side}_hand_root`, ...fingers.flatMap((finger) => [1, 2, 3, 4].map((j) => `${side}_${finger}${j}`))];
  const names = [...COCO17.names, ...feet, ...face, ...hand("left"), ...hand("right")];
  const FACE = 23;
  const LEFT_HAND = 91;
  const RIGHT_HAND = 112;
  const handLimbs = (root: number, wrist: number): [number, number][] =>
    fingers.flatMap((_, f) => {
      const first = root + 1 + 4 * f;
      return [[wrist, first], [first, first + 1], [first + 1, first + 2], [first + 2, first + 3]] as [number, number][];
    });
  // The face's mirror pairs of the 300-W layout (jaw line, brows, nose, eyes, mouth), in face indices.
  const facePairs = [
    [0, 16], [1, 15], [2, 14], [3, 13], [4, 12], [5, 11], [6, 10], [7, 9], [17, 26], [18, 25], [19, 24], [20, 23],
    [21, 22], [31, 35], [32, 34], [36, 45], [37, 44], [38, 43], [39, 42], [40, 47], [41, 46], [48, 54], [49, 53],
    [50, 52], [55, 59], [56, 58], [60, 64], [61, 63], [65, 67],
  ] as const;
  return Object.freeze({
    name: "coco-wholebody-133",
    names: Object.freeze(names),
    skeleton: frozenPairs([
      ...COCO17.skeleton,
      [15, 17], [15, 18], [15, 19], [16, 20], [16, 21], [16, 22],
      ...handLimbs(LEFT_HAND, 9),
      ...handLimbs(RIGHT_HAND, 10),
    ]),
    flipPairs: frozenPairs([
      ...COCO17.flipPairs,
      [17, 20], [18, 21], [19, 22],
      ...facePairs.map(([a, b]) => [FACE + a, FACE + b] as const),
      ...Array.from({ length: 21 }, (_, i) => [LEFT_HAND + i, RIGHT_HAND + i] as const),
    ]),
    sigmas: Object.freeze([
      0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
      0.068, 0.066, 0.066, 0.092, 0.094, 0.094,
      0.042, 0.043, 0.044, 0.043, 0.04, 0.035, 0.031, 0.025, 0.02, 0.023, 0.029, 0.032, 0.037, 0.038, 0.043, 0.041, 0.045,
      0.013, 0.012, 0.011, 0.011, 0.012, 0.012, 0.011, 0.011, 0.013, 0.015, 0.009, 0.007, 0.007, 0.007, 0.012, 0.009,
      0.008, 0.016, 0.01, 0.017, 0.011, 0.009, 0.011, 0.009, 0.007, 0.013, 0.008, 0.011, 0.012, 0.01, 0.034, 0.008,
      0.008, 0.009, 0.008, 0.008, 0.007, 0.01, 0.008, 0.009, 0.009, 0.009, 0.007, 0.007, 0.008, 0.011, 0.008, 0.008,
      0.008, 0.01, 0.008,
      0.029, 0.022, 0.035, 0.037, 0.047, 0.026, 0.025, 0.024, 0.035, 0.018, 0.024, 0.022, 0.026, 0.017, 0.021, 0.021,
      0.032, 0.02, 0.019, 0.022, 0.031,
      0.029, 0.022, 0.035, 0.037, 0.047, 0.026, 0.025, 0.024, 0.035, 0.018, 0.024, 0.022, 0.026, 0.017, 0.021, 0.021,
      0.032, 0.02, 0.019, 0.022, 0.031,
    ]),
  });
})();

/** The schemas PoseLoop knows by name (a manifest may name one instead of declaring it). */
export const KNOWN_KEYPOINT_SCHEMAS: readonly KeypointSchema[] = Object.freeze([COCO17, BLAZEPOSE33, COCO_WHOLEBODY133]);

/** A known schema by its name ("coco-17", "blazepose-33", "coco-wholebody-133"), or undefined. */
export function keypointSchemaByName(name: string): KeypointSchema | undefined {
  return KNOWN_KEYPOINT_SCHEMAS.find((schema) => schema.name === name);
}

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
