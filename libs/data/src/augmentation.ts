import type { CropRegion, KeypointSchema, Size } from "@poseloop/pose";
import type { SeededRandom } from "@poseloop/core";

/**
 * Training-time augmentation of top-down crops, field for field the trainer's proto `AugmentationSpec`
 * (HRNet's DATASET.* keys). Absent fields are off, except the two that only qualify another one.
 */
export interface AugmentationConfig {
  /** Mirror half of the crops, swapping left/right joints (DATASET.FLIP). Default false. */
  readonly flip?: boolean;
  /**
   * Rotation in degrees (DATASET.ROT_FACTOR): normal with this standard deviation, clipped to ±2× it, as
   * HRNet draws it. Default 0 (off).
   */
  readonly rotationFactor?: number;
  /** Probability that a crop is rotated at all. Default 0.6, as HRNet. */
  readonly rotationProb?: number;
  /** Crop scale 1 ± this (DATASET.SCALE_FACTOR): normal with this deviation, clipped, as HRNet. Default 0 (off). */
  readonly scaleFactor?: number;
  /** Probability of cropping to the upper or lower body alone (DATASET.PROB_HALF_BODY). Default 0 (off). */
  readonly halfBodyProb?: number;
  /** Half-body crops need more than this many labelled joints (DATASET.NUM_JOINTS_HALF_BODY). Default 8. */
  readonly halfBodyMinKeypoints?: number;
  /** Probability of pasting a rectangle of random colour or noise over the crop (random erasing). Default 0. */
  readonly occlusionProb?: number;
  /** Brightness, contrast and saturation each scaled by a factor in [1 − j, 1 + j] (torchvision's ColorJitter). Default 0. */
  readonly colorJitter?: number;
}

/** Every field of an AugmentationConfig, defaults applied. */
export type ResolvedAugmentation = Required<AugmentationConfig>;

/** HRNet-W32 256x192's COCO recipe: flip, rotation 40 (p 0.6), scale 0.35, half body 0.3 with > 8 joints. */
export const HRNET_AUGMENTATION: ResolvedAugmentation = Object.freeze({
  flip: true,
  rotationFactor: 40,
  rotationProb: 0.6,
  scaleFactor: 0.35,
  halfBodyProb: 0.3,
  halfBodyMinKeypoints: 8,
  occlusionProb: 0,
  colorJitter: 0,
});

/** Every problem with an augmentation config (empty when valid), each naming its field. */
export function augmentationProblems(config: AugmentationConfig): string[] {
  const problems: string[] = [];
  const probability = (value: number | undefined, name: string): void => {
    if (value !== undefined && !(value >= 0 && value <= 1)) problems.push(`augmentation.${name} must be a probability in [0, 1], got ${String(value)}`);
  };
  if (config.flip !== undefined && typeof config.flip !== "boolean") problems.push("augmentation.flip must be true or false");
  if (config.rotationFactor !== undefined && !(config.rotationFactor >= 0 && config.rotationFactor <= 90)) {
    problems.push(`augmentation.rotationFactor must be in [0, 90] degrees, got ${String(config.rotationFactor)}`);
  }
  probability(config.rotationProb, "rotationProb");
  if (config.scaleFactor !== undefined && !(config.scaleFactor >= 0 && config.scaleFactor < 1)) {
    problems.push(`augmentation.scaleFactor must be in [0, 1), got ${String(config.scaleFactor)}`);
  }
  probability(config.halfBodyProb, "halfBodyProb");
  if (config.halfBodyMinKeypoints !== undefined && !(Number.isInteger(config.halfBodyMinKeypoints) && config.halfBodyMinKeypoints >= 0)) {
    problems.push(`augmentation.halfBodyMinKeypoints must be an integer >= 0, got ${String(config.halfBodyMinKeypoints)}`);
  }
  probability(config.occlusionProb, "occlusionProb");
  if (config.colorJitter !== undefined && !(config.colorJitter >= 0 && config.colorJitter <= 1)) {
    problems.push(`augmentation.colorJitter must be in [0, 1], got ${String(config.colorJitter)}`);
  }
  return problems;
}

/** The config with its defaults; validate with `augmentationProblems` first. */
export function resolveAugmentation(config: AugmentationConfig): ResolvedAugmentation {
  return Object.freeze({
    flip: config.flip ?? false,
    rotationFactor: config.rotationFactor ?? 0,
    rotationProb: config.rotationProb ?? 0.6,
    scaleFactor: config.scaleFactor ?? 0,
    halfBodyProb: config.halfBodyProb ?? 0,
    halfBodyMinKeypoints: config.halfBodyMinKeypoints ?? 8,
    occlusionProb: config.occlusionProb ?? 0,
    colorJitter: config.colorJitter ?? 0,
  });
}

/** A rectangle pasted over the crop, in fractions of the crop's width and height. */
export interface OcclusionPatch {
  readonly x: number;
  readonly y: number;
  readonly width: number;
  readonly height: number;
  /** A solid colour (0–255 RGB), or undefined for uniform noise drawn from `noiseSeed`. */
  readonly colour: readonly [number, number, number] | undefined;
  readonly noiseSeed: number;
}

/** What augmentation does to one sample in one epoch. */
export interface SampleAugmentation {
  /** The half-body coin came up (it applies only when the sample has enough labelled joints). */
  readonly halfBody: boolean;
  /** Which half a half-body crop prefers when both have enough joints. */
  readonly preferUpper: boolean;
  readonly scale: number;
  /** Degrees, the CropRegion's sense. */
  readonly rotation: number;
  readonly flip: boolean;
  readonly occlusion: OcclusionPatch | undefined;
  readonly brightness: number;
  readonly contrast: number;
  readonly saturation: number;
}

// RTMPose's CoarseDropout: one hole of 20–40 % of each side of the crop.
const OCCLUSION_MIN_SIDE = 0.2;
const OCCLUSION_MAX_SIDE = 0.4;

/**
 * Draws one sample's augmentation. Every draw happens whatever the config, in a fixed order, so turning
 * one augmentation on or off does not change what the others do to a sample.
 */
export function sampleAugmentation(config: ResolvedAugmentation, random: SeededRandom): SampleAugmentation {
  const halfBodyDraw = random.next();
  const upperDraw = random.next();
  const scaleDraw = random.normal();
  const rotationCoin = random.next();
  const rotationDraw = random.normal();
  const flipDraw = random.next();
  const occlusionCoin = random.next();
  const patch = { width: random.next(), height: random.next(), x: random.next(), y: random.next(), noise: random.next() };
  const colour = [random.int(0, 255), random.int(0, 255), random.int(0, 255)] as const;
  const noiseSeed = random.nextUint32();
  const jitter = [random.next(), random.next(), random.next()] as const;

  const sf = config.scaleFactor;
  const rf = config.rotationFactor;
  let occlusion: OcclusionPatch | undefined;
  if (occlusionCoin < config.occlusionProb) {
    const width = OCCLUSION_MIN_SIDE + (OCCLUSION_MAX_SIDE - OCCLUSION_MIN_SIDE) * patch.width;
    const height = OCCLUSION_MIN_SIDE + (OCCLUSION_MAX_SIDE - OCCLUSION_MIN_SIDE) * patch.height;
    occlusion = { x: patch.x * (1 - width), y: patch.y * (1 - height), width, height, colour: patch.noise < 0.5 ? colour : undefined, noiseSeed };
  }
  const factor = (draw: number): number => 1 + config.colorJitter * (2 * draw - 1);
  return {
    halfBody: halfBodyDraw < config.halfBodyProb,
    preferUpper: upperDraw < 0.5,
    scale: Math.min(1 + sf, Math.max(1 - sf, 1 + sf * scaleDraw)),
    rotation: rf > 0 && rotationCoin < config.rotationProb ? Math.min(2 * rf, Math.max(-2 * rf, rf * rotationDraw)) : 0,
    flip: config.flip && flipDraw < 0.5,
    occlusion,
    brightness: factor(jitter[0]),
    contrast: factor(jitter[1]),
    saturation: factor(jitter[2]),
  };
}

const LOWER_BODY = /hip|knee|ankle|heel|toe|foot/i;

/** Per joint, whether it belongs to the upper body: HRNet's split of COCO-17 (0–10 upper), by name for any schema. */
export function upperBodyJoints(schema: KeypointSchema): boolean[] {
  return schema.names.map((name) => !LOWER_BODY.test(name));
}

/**
 * HRNet's half-body crop: the labelled joints of the preferred half (the other when it has too few), their
 * box's centre and its aspect-fixed size times 1.5. Undefined when fewer than two joints qualify.
 */
export function halfBodyRegion(
  keypoints: ArrayLike<number>,
  visibility: ArrayLike<number>,
  upper: readonly boolean[],
  preferUpper: boolean,
  inputSize: Size,
): CropRegion | undefined {
  const upperJoints: number[] = [];
  const lowerJoints: number[] = [];
  for (let j = 0; j < upper.length; j++) {
    if (!((visibility[j] as number) > 0)) continue;
    (upper[j] === true ? upperJoints : lowerJoints).push(j);
  }
  const selected = preferUpper && upperJoints.length > 2 ? upperJoints : lowerJoints.length > 2 ? lowerJoints : upperJoints;
  if (selected.length < 2) return undefined;
  let x0 = Infinity;
  let y0 = Infinity;
  let x1 = -Infinity;
  let y1 = -Infinity;
  let sx = 0;
  let sy = 0;
  for (const j of selected) {
    const x = keypoints[2 * j] as number;
    const y = keypoints[2 * j + 1] as number;
    sx += x;
    sy += y;
    x0 = Math.min(x0, x);
    y0 = Math.min(y0, y);
    x1 = Math.max(x1, x);
    y1 = Math.max(y1, y);
  }
  const aspectRatio = inputSize.width / inputSize.height;
  let width = x1 - x0;
  let height = y1 - y0;
  if (width > aspectRatio * height) height = width / aspectRatio;
  else if (width < aspectRatio * height) width = height * aspectRatio;
  if (!(width > 0 && height > 0)) return undefined;
  return { center: [sx / selected.length, sy / selected.length], scale: [width * 1.5, height * 1.5], rotation: 0 };
}

/**
 * The region a sample's crop shows after the geometric augmentations: the half-body region when the coin
 * and the joints allow, then scaled and rotated. The flip is applied in crop space (see the sample pipeline).
 */
export function augmentRegion(
  region: CropRegion,
  augmentation: SampleAugmentation,
  config: ResolvedAugmentation,
  joints: { readonly keypoints: ArrayLike<number>; readonly visibility: ArrayLike<number>; readonly upper: readonly boolean[] } | undefined,
  inputSize: Size,
): CropRegion {
  let base = region;
  if (augmentation.halfBody && joints !== undefined) {
    let labelled = 0;
    for (let j = 0; j < joints.upper.length; j++) if ((joints.visibility[j] as number) > 0) labelled++;
    if (labelled > config.halfBodyMinKeypoints) base = halfBodyRegion(joints.keypoints, joints.visibility, joints.upper, augmentation.preferUpper, inputSize) ?? region;
  }
  return {
    center: [base.center[0], base.center[1]],
    scale: [base.scale[0] * augmentation.scale, base.scale[1] * augmentation.scale],
    rotation: base.rotation + augmentation.rotation,
  };
}

const clampByte = (value: number): number => (value < 0 ? 0 : value > 255 ? 255 : value);

/**
 * Brightness, then contrast (around the crop's mean grey), then saturation (around each pixel's grey), each
 * clamped to 0–255 as torchvision does, on three planes of 0–255 RGB at `offset` of `planes`.
 */
export function jitterColours(planes: Float32Array, offset: number, planeSize: number, augmentation: SampleAugmentation): void {
  const { brightness, contrast, saturation } = augmentation;
  if (brightness === 1 && contrast === 1 && saturation === 1) return;
  const r = offset;
  const g = offset + planeSize;
  const b = offset + 2 * planeSize;
  let greySum = 0;
  for (let i = 0; i < planeSize; i++) {
    const red = clampByte(planes[r + i]! * brightness);
    const green = clampByte(planes[g + i]! * brightness);
    const blue = clampByte(planes[b + i]! * brightness);
    planes[r + i] = red;
    planes[g + i] = green;
    planes[b + i] = blue;
    greySum += 0.299 * red + 0.587 * green + 0.114 * blue;
  }
  const mean = greySum / planeSize;
  for (let i = 0; i < planeSize; i++) {
    const red = clampByte((planes[r + i]! - mean) * contrast + mean);
    const green = clampByte((planes[g + i]! - mean) * contrast + mean);
    const blue = clampByte((planes[b + i]! - mean) * contrast + mean);
    const grey = 0.299 * red + 0.587 * green + 0.114 * blue;
    planes[r + i] = clampByte(grey + (red - grey) * saturation);
    planes[g + i] = clampByte(grey + (green - grey) * saturation);
    planes[b + i] = clampByte(grey + (blue - grey) * saturation);
  }
}

/** Pastes the occlusion patch over three planes of 0–255 RGB (`width` x `height`) at `offset`. */
export function pasteOcclusion(planes: Float32Array, offset: number, width: number, height: number, patch: OcclusionPatch, noise: SeededRandom | undefined): void {
  const planeSize = width * height;
  const x0 = Math.round(patch.x * width);
  const y0 = Math.round(patch.y * height);
  const x1 = Math.min(width, x0 + Math.max(1, Math.round(patch.width * width)));
  const y1 = Math.min(height, y0 + Math.max(1, Math.round(patch.height * height)));
  for (let y = y0; y < y1; y++) {
    for (let x = x0; x < x1; x++) {
      const i = offset + y * width + x;
      for (let c = 0; c < 3; c++) {
        planes[i + c * planeSize] = patch.colour === undefined ? (noise?.int(0, 255) ?? 0) : patch.colour[c]!;
      }
    }
  }
}
