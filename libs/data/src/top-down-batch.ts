import { AppError, Code, SeededRandom } from "@poseloop/core";
import {
  applyAffine,
  boxToCropRegion,
  composeAffine,
  createKeypointCodec,
  cropAffine,
  flipPermutation,
  invertAffine,
  type Affine2D,
  type CropRegion,
  type KeypointCodec,
  type KeypointCodecSpec,
  type KeypointSchema,
  type Size,
} from "@poseloop/pose";
import { warpToTensor, type RgbImage, type TensorNormalization } from "@poseloop/vision";
import { augmentRegion, jitterColours, pasteOcclusion, sampleAugmentation, upperBodyJoints, type ResolvedAugmentation, type SampleAugmentation } from "./augmentation.js";
import { DecodedImageStore, imageLabel, type ImageCacheOptions } from "./decoded-image-store.js";
import { AUGMENT_STREAM } from "./epoch-order.js";
import type { SampleTable } from "./sample-table.js";

/** What the loader does with a sample whose image or annotation is bad. */
export type BadSamplePolicy = "fail" | "skip";

/** One sample of a batch, enough to take its predictions back to the frame and into COCO evaluation. */
export interface PoseSampleInfo {
  /** Position of the sample in the loader's source (instance index, or box index across the images). */
  readonly sampleIndex: number;
  readonly imageId: number;
  /** The COCO annotation of a training instance; undefined for validation boxes. */
  readonly annotationId: number | undefined;
  /** The frame region the crop shows, augmentation (half body, scale, rotation) included. */
  readonly region: CropRegion;
  /** Whether the crop is mirrored (its joints are then swapped left/right). */
  readonly flipped: boolean;
  /** Model-input pixels → frame pixels, the flip included: apply it to decoded keypoints (`applyAffineToPoints`). */
  readonly cropToFrame: Affine2D;
  /** The box's score (1 for ground truth). */
  readonly score: number;
  /** The annotation's area, or the validation box's area. */
  readonly area: number;
}

/** A sample left out of a batch under the "skip" policy: its slot holds zeros and weight 0. */
export interface SkippedSample {
  readonly sampleIndex: number;
  readonly imageId: number;
  readonly code: Code;
  readonly message: string;
}

/** One batch, its tensors in the layout the step graph takes. */
export interface PoseBatch {
  readonly epoch: number;
  /** The batch's position in its epoch. */
  readonly index: number;
  /** Samples in it (the last batch of an epoch without dropLast may be smaller than the batch size). */
  readonly size: number;
  /** Crops [size, 3, H, W], normalized. */
  readonly images: Float32Array;
  /** One array per codec target tensor, [size, ...targetShape[i]]; none for validation boxes (no keypoints). */
  readonly targets: readonly Float32Array[];
  /** [size, K]; 0 for unlabelled joints and joints outside the crop; empty for validation boxes. */
  readonly targetWeights: Float32Array;
  readonly samples: readonly PoseSampleInfo[];
  readonly skipped: readonly SkippedSample[];
}

/** Everything a batch builder needs; plain data, so it crosses to worker threads. */
export interface BatchBuilderConfig {
  readonly table: SampleTable;
  readonly inputSize: Size;
  readonly codec: KeypointCodecSpec;
  readonly schema: KeypointSchema;
  readonly padding: number;
  readonly normalization: TensorNormalization;
  readonly augmentation: ResolvedAugmentation | undefined;
  readonly seed: number;
  readonly badSamples: BadSamplePolicy;
  readonly imageCache: ImageCacheOptions;
  readonly readTimeoutMs: number;
}

export interface BatchRequest {
  readonly epoch: number;
  readonly index: number;
  /** Sample indices of the batch, in order. */
  readonly samples: Int32Array;
}

/** The 0–255 scale as is: crops that get pixel augmentation are warped raw and normalized afterwards. */
const RAW_RGB: TensorNormalization = Object.freeze({ mean: [0, 0, 0] as const, std: [1, 1, 1] as const, channelOrder: "RGB" as const });

/** Errors that say a sample's data is bad (and may be skipped), as opposed to the machine being in trouble. */
const DATA_ERRORS: ReadonlySet<Code> = new Set([Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.DATA_LOSS]);

// Images decoded ahead of the one being warped: decoding runs on libuv's threads while this one warps.
const DECODE_AHEAD = 4;

/**
 * Builds batches of top-down training (or validation) samples: for each sample, decode its image (through
 * the image store), derive the crop region from its box (`boxToCropRegion` with `padding`), apply the
 * augmentation drawn from (seed, epoch, sample index), warp the crop straight into the batch tensor, map the
 * keypoints through the same affine and encode them into the batch targets.
 *
 * Coordinates: keypoints and boxes are taken as pixel-index coordinates (pixel (i, j) centred on (i, j)),
 * as HRNet and mmpose take COCO's, and `cropToFrame` gives predictions back in the same convention.
 *
 * One builder per thread (its codec keeps scratch buffers).
 */
export class TopDownBatchBuilder {
  readonly codec: KeypointCodec;
  readonly images: DecodedImageStore;
  readonly #config: BatchBuilderConfig;
  readonly #flip: Int32Array;
  readonly #upper: readonly boolean[];
  readonly #keypoints: Float32Array;
  readonly #visibility: Float32Array;
  readonly #inputArea: number;

  constructor(config: BatchBuilderConfig) {
    this.#config = config;
    this.codec = createKeypointCodec(config.codec);
    this.images = new DecodedImageStore({ ...config.imageCache, readTimeoutMs: config.readTimeoutMs });
    this.#flip = flipPermutation(config.schema);
    this.#upper = upperBodyJoints(config.schema);
    const k = this.codec.numKeypoints;
    this.#keypoints = new Float32Array(2 * k);
    this.#visibility = new Float32Array(k);
    this.#inputArea = config.inputSize.width * config.inputSize.height;
  }

  async build(request: BatchRequest): Promise<PoseBatch> {
    const { table } = this.#config;
    const size = request.samples.length;
    const withTargets = table.kind === "instances";
    const k = this.codec.numKeypoints;
    const images = new Float32Array(size * 3 * this.#inputArea);
    const targets = withTargets ? this.codec.targetShape.map((shape) => new Float32Array(size * shape.reduce((a, b) => a * b, 1))) : [];
    const targetWeights = new Float32Array(withTargets ? size * k : 0);
    const samples: PoseSampleInfo[] = [];
    const skipped: SkippedSample[] = [];

    type Loaded = { readonly ok: true; readonly image: RgbImage } | { readonly ok: false; readonly error: unknown };
    const loads: Promise<Loaded>[] = [];
    const startLoad = (slot: number): void => {
      const sampleIndex = request.samples[slot]!;
      loads[slot] = this.#loadImage(sampleIndex).then(
        (image): Loaded => ({ ok: true, image }),
        (error: unknown): Loaded => ({ ok: false, error }),
      );
    };
    for (let slot = 0; slot < Math.min(size, DECODE_AHEAD); slot++) startLoad(slot);
    for (let slot = 0; slot < size; slot++) {
      if (slot + DECODE_AHEAD < size) startLoad(slot + DECODE_AHEAD);
      const sampleIndex = request.samples[slot]!;
      const loaded = await loads[slot]!;
      try {
        if (!loaded.ok) throw loaded.error;
        samples.push(this.#fillSample(loaded.image, sampleIndex, request.epoch, slot, images, targets, targetWeights));
      } catch (error) {
        const mapped = AppError.from(error);
        if (this.#config.badSamples === "fail" || !DATA_ERRORS.has(mapped.code)) throw error;
        skipped.push({ sampleIndex, imageId: table.imageIds[sampleIndex]!, code: mapped.code, message: mapped.message });
        samples.push(this.#emptySlot(sampleIndex, slot, images, targets, targetWeights));
      }
    }
    return { epoch: request.epoch, index: request.index, size, images, targets, targetWeights, samples, skipped };
  }

  #label(sampleIndex: number): string {
    const { table } = this.#config;
    return imageLabel(table.imageIds[sampleIndex]!, table.imagePaths[table.imageIndex[sampleIndex]!]!);
  }

  /** Checks the sample's annotation first, so a bad box or keypoint fails without reading the image. */
  async #loadImage(sampleIndex: number): Promise<RgbImage> {
    const { table } = this.#config;
    const label = this.#label(sampleIndex);
    this.#checkAnnotation(sampleIndex, label);
    const image = await this.images.get(table.imagePaths[table.imageIndex[sampleIndex]!]!, label);
    const width = table.imageSizes[2 * sampleIndex]!;
    const height = table.imageSizes[2 * sampleIndex + 1]!;
    if (image.width !== width || image.height !== height) {
      throw new AppError(Code.INVALID_ARGUMENT, `${label} decodes to ${image.width}x${image.height} but is annotated as ${width}x${height}`);
    }
    return image;
  }

  #checkAnnotation(sampleIndex: number, label: string): void {
    const { table, schema } = this.#config;
    const annotation = Number.isNaN(table.annotationIds[sampleIndex]!) ? `box ${sampleIndex}` : `annotation ${table.annotationIds[sampleIndex]}`;
    const b = table.boxes.subarray(4 * sampleIndex, 4 * sampleIndex + 4);
    if (!b.every(Number.isFinite) || !(b[2]! > 0 && b[3]! > 0)) {
      throw new AppError(Code.INVALID_ARGUMENT, `${label}: the box of ${annotation} [${Array.from(b).join(", ")}] is empty or not finite`);
    }
    const k = table.numKeypoints;
    for (let j = 0; j < k; j++) {
      if (table.visibility[k * sampleIndex + j] === 0) continue;
      const x = table.keypoints[2 * (k * sampleIndex + j)]!;
      const y = table.keypoints[2 * (k * sampleIndex + j) + 1]!;
      if (!Number.isFinite(x) || !Number.isFinite(y)) {
        throw new AppError(Code.INVALID_ARGUMENT, `${label}: keypoint ${j} (${schema.names[j] ?? "?"}) of ${annotation} is not a finite number`);
      }
    }
  }

  #fillSample(
    image: RgbImage,
    sampleIndex: number,
    epoch: number,
    slot: number,
    images: Float32Array,
    targets: Float32Array[],
    targetWeights: Float32Array,
  ): PoseSampleInfo {
    const { table, inputSize, augmentation: config } = this.#config;
    const k = table.numKeypoints;
    const box = { x: table.boxes[4 * sampleIndex]!, y: table.boxes[4 * sampleIndex + 1]!, width: table.boxes[4 * sampleIndex + 2]!, height: table.boxes[4 * sampleIndex + 3]! };
    const frameKeypoints = table.keypoints.subarray(2 * k * sampleIndex, 2 * k * (sampleIndex + 1));
    const frameVisibility = table.visibility.subarray(k * sampleIndex, k * (sampleIndex + 1));
    let augmentation: SampleAugmentation | undefined;
    let region = boxToCropRegion(box, inputSize, { padding: this.#config.padding });
    if (config !== undefined) {
      augmentation = sampleAugmentation(config, new SeededRandom(this.#config.seed, AUGMENT_STREAM, epoch, sampleIndex));
      const joints = k > 0 ? { keypoints: frameKeypoints, visibility: frameVisibility, upper: this.#upper } : undefined;
      region = augmentRegion(region, augmentation, config, joints, inputSize);
    }
    const flipped = augmentation?.flip ?? false;
    let toCrop: Affine2D;
    let toFrame: Affine2D;
    try {
      toCrop = cropAffine(region, inputSize, { udp: this.codec.udp });
      // The flip mirrors the crop itself (x' = W − 1 − x), so a flipped crop is exactly the mirror image of the
      // unflipped one, as the flip test at inference mirrors its input.
      if (flipped) toCrop = composeAffine([-1, 0, inputSize.width - 1, 0, 1, 0], toCrop);
      toFrame = invertAffine(toCrop);
    } catch (error) {
      throw new AppError(Code.INVALID_ARGUMENT, `${this.#label(sampleIndex)}: no crop can be made of its box`, { cause: error });
    }

    const offset = slot * 3 * this.#inputArea;
    const pixelAugmentation = augmentation !== undefined && (augmentation.occlusion !== undefined || augmentation.brightness !== 1 || augmentation.contrast !== 1 || augmentation.saturation !== 1);
    if (augmentation === undefined || !pixelAugmentation) {
      warpToTensor(image, toFrame, inputSize.width, inputSize.height, this.#config.normalization, images, offset);
    } else {
      warpToTensor(image, toFrame, inputSize.width, inputSize.height, RAW_RGB, images, offset);
      jitterColours(images, offset, this.#inputArea, augmentation);
      if (augmentation.occlusion !== undefined) {
        const noise = augmentation.occlusion.colour === undefined ? new SeededRandom(augmentation.occlusion.noiseSeed) : undefined;
        pasteOcclusion(images, offset, inputSize.width, inputSize.height, augmentation.occlusion, noise);
      }
      normalizeInPlace(images, offset, this.#inputArea, this.#config.normalization);
    }

    if (k > 0) {
      const keypoints = this.#keypoints;
      const visibility = this.#visibility;
      for (let j = 0; j < k; j++) {
        const source = flipped ? this.#flip[j]! : j;
        const v = frameVisibility[source]!;
        const [x, y] = v > 0 ? applyAffine(toCrop, frameKeypoints[2 * source]!, frameKeypoints[2 * source + 1]!) : [0, 0];
        keypoints[2 * j] = x;
        keypoints[2 * j + 1] = y;
        // A joint outside the crop's pixels does not train: the model cannot see it in its input.
        visibility[j] = v > 0 && x >= -0.5 && x < inputSize.width - 0.5 && y >= -0.5 && y < inputSize.height - 0.5 ? v : 0;
      }
      this.codec.encode(keypoints, visibility, { targets, weights: targetWeights, index: slot });
    }
    return {
      sampleIndex,
      imageId: table.imageIds[sampleIndex]!,
      annotationId: table.kind === "instances" ? table.annotationIds[sampleIndex]! : undefined,
      region,
      flipped,
      cropToFrame: toFrame,
      score: table.scores[sampleIndex]!,
      area: table.areas[sampleIndex]!,
    };
  }

  /** A skipped sample's slot: zeros (the mean colour once normalized) and weight 0, so it adds no loss. */
  #emptySlot(sampleIndex: number, slot: number, images: Float32Array, targets: Float32Array[], targetWeights: Float32Array): PoseSampleInfo {
    const { table, inputSize } = this.#config;
    const plane = 3 * this.#inputArea;
    images.fill(0, slot * plane, (slot + 1) * plane);
    for (const [i, shape] of this.codec.targetShape.entries()) {
      const target = targets[i];
      const size = shape.reduce((a, b) => a * b, 1);
      target?.fill(0, slot * size, (slot + 1) * size);
    }
    const k = this.codec.numKeypoints;
    if (targetWeights.length > 0) targetWeights.fill(0, slot * k, (slot + 1) * k);
    const box = { x: table.boxes[4 * sampleIndex]!, y: table.boxes[4 * sampleIndex + 1]!, width: table.boxes[4 * sampleIndex + 2]!, height: table.boxes[4 * sampleIndex + 3]! };
    let region: CropRegion = { center: [box.x + box.width / 2, box.y + box.height / 2], scale: [1, 1], rotation: 0 };
    try {
      region = boxToCropRegion(box, inputSize, { padding: this.#config.padding });
    } catch {
      // The box itself is what is bad: keep the unit region centred on it.
    }
    return {
      sampleIndex,
      imageId: table.imageIds[sampleIndex]!,
      annotationId: table.kind === "instances" ? table.annotationIds[sampleIndex]! : undefined,
      region,
      flipped: false,
      cropToFrame: [1, 0, 0, 0, 1, 0],
      score: table.scores[sampleIndex]!,
      area: table.areas[sampleIndex]!,
    };
  }
}

/** (v − mean) / std in place on three RGB planes, reordered to the normalization's channel order. */
export function normalizeInPlace(planes: Float32Array, offset: number, planeSize: number, normalization: TensorNormalization): void {
  const { mean, std } = normalization;
  const bgr = normalization.channelOrder === "BGR";
  const r = offset;
  const g = offset + planeSize;
  const b = offset + 2 * planeSize;
  for (let i = 0; i < planeSize; i++) {
    const red = (planes[r + i]! - mean[0]) / std[0];
    const blue = (planes[b + i]! - mean[2]) / std[2];
    planes[g + i] = (planes[g + i]! - mean[1]) / std[1];
    planes[r + i] = bgr ? blue : red;
    planes[b + i] = bgr ? red : blue;
  }
}

/** The buffers of a batch, to transfer instead of copy. */
export function batchBuffers(batch: PoseBatch): ArrayBuffer[] {
  return [batch.images, ...batch.targets, batch.targetWeights].map((array) => array.buffer as ArrayBuffer);
}
