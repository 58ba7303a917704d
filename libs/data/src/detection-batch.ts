import { AppError, Code, SeededRandom } from "@poseloop/core";
import type { Size } from "@poseloop/pose";
import { IMAGENET_NORMALIZATION, warpToTensor, type RgbImage, type TensorNormalization } from "@poseloop/vision";
import type { CocoKeypointDataset } from "./coco-reader.js";
import { DecodedImageStore, imageLabel, type ImageCacheOptions } from "./decoded-image-store.js";
import { createDetectionTargets, encodeDetectionTargets, type DetectionGrid, type DetectionTargets, type TargetBox } from "./detection-targets.js";
import { batchCount, epochOrder } from "./epoch-order.js";

/** A ground-truth object of a detection image: COCO's [x, y, w, h] box (continuous pixel edges), area and crowd flag. */
export interface DetectionObject {
  readonly bbox: readonly [number, number, number, number];
  /** The annotation's area (COCO's is the mask's); box evaluation's area ranges test it. */
  readonly area: number;
  readonly iscrowd: boolean;
  /** Default 0 (person). */
  readonly classIndex?: number;
}

/** One whole picture and every object in it. */
export interface DetectionImage {
  readonly imageId: number;
  readonly imagePath: string;
  readonly width: number;
  readonly height: number;
  readonly objects: readonly DetectionObject[];
}

/** Detection training's augmentation: the picture mirrored, and scaled around the letterbox's scale. */
export interface DetectionAugmentation {
  /** Probability of a horizontal flip; default 0. */
  readonly flipProb?: number;
  /** The scale is the letterbox's times a factor drawn from [1 − f, 1 + f]; default 0. */
  readonly scaleFactor?: number;
}

export interface DetectionBatchOptions {
  readonly inputSize: Size;
  /** Input pixels per output cell; 4 for the zoo's detector. */
  readonly stride: number;
  /** Default 1. */
  readonly numClasses?: number;
  /** Default IMAGENET_NORMALIZATION, as pose inputs. */
  readonly normalization?: TensorNormalization;
  /** The letterbox padding's pixel value before normalization (DetectorSpec.pad_value); default 0. */
  readonly padValue?: number;
  /** Training only. */
  readonly augmentation?: DetectionAugmentation;
  /** Seeds the augmentation: (seed, epoch, image index) gives the same sample bit for bit. Default 0. */
  readonly seed?: number;
  readonly imageCache?: ImageCacheOptions;
  /** Deadline for reading one image file; default 30 s. */
  readonly readTimeoutMs?: number;
}

/** Where a batch slot's picture went: input pixel (x, y) shows frame point ((x + shiftX) / scale, (y + shiftY) / scale), mirrored when flipped. */
export interface DetectionSampleInfo {
  readonly sampleIndex: number;
  readonly imageId: number;
  readonly scale: number;
  readonly shiftX: number;
  readonly shiftY: number;
  readonly flipped: boolean;
  /** Objects encoded into the targets. */
  readonly objects: number;
}

export interface DetectionBatch {
  readonly epoch: number;
  readonly index: number;
  readonly size: number;
  /** Letterboxed pictures [size, 3, H, W], normalized. */
  readonly images: Float32Array;
  readonly targets: DetectionTargets;
  readonly samples: readonly DetectionSampleInfo[];
}

/** Augmentation's random stream (apart from the top-down loader's and the order's). */
const DETECTION_STREAM = 0x44455445;
/** A box that keeps less of itself than this inside the input after a scale-crop is left out. */
const MIN_VISIBLE_FRACTION = 0.2;

/** The images of a COCO split with all their annotated people (crowds flagged), for detection. */
export function detectionImagesFromCoco(dataset: CocoKeypointDataset): DetectionImage[] {
  const objects = new Map<number, DetectionObject[]>();
  for (const annotation of dataset.file.annotations) {
    const [x = 0, y = 0, w = 0, h = 0] = annotation.bbox;
    if (!(w > 0 && h > 0)) continue;
    let list = objects.get(annotation.image_id);
    if (list === undefined) objects.set(annotation.image_id, (list = []));
    list.push({ bbox: [x, y, w, h], area: annotation.area, iscrowd: annotation.iscrowd === 1 });
  }
  return dataset.file.images.map((image) => ({
    imageId: image.id,
    imagePath: `${dataset.imagesDir}/${image.file_name}`,
    width: image.width,
    height: image.height,
    objects: objects.get(image.id) ?? [],
  }));
}

/** Problems with detection batch options (empty when valid). */
export function detectionBatchProblems(options: DetectionBatchOptions): string[] {
  const problems: string[] = [];
  const { width, height } = options.inputSize;
  const stride = options.stride;
  if (!(Number.isInteger(stride) && stride > 0)) problems.push(`stride must be a positive integer, got ${stride}`);
  else if (!(Number.isInteger(width) && width > 0 && width % stride === 0 && Number.isInteger(height) && height > 0 && height % stride === 0)) {
    problems.push(`inputSize ${width}x${height} must be positive multiples of the stride ${stride}`);
  }
  const classes = options.numClasses ?? 1;
  if (!(Number.isInteger(classes) && classes > 0)) problems.push(`numClasses must be a positive integer, got ${classes}`);
  const flip = options.augmentation?.flipProb ?? 0;
  if (!(flip >= 0 && flip <= 1)) problems.push(`augmentation.flipProb is a probability from 0 to 1, got ${flip}`);
  const scale = options.augmentation?.scaleFactor ?? 0;
  if (!(scale >= 0 && scale < 1)) problems.push(`augmentation.scaleFactor must be from 0 to below 1, got ${scale}`);
  if (options.padValue !== undefined && !(options.padValue >= 0 && options.padValue <= 255)) problems.push(`padValue must be from 0 to 255, got ${options.padValue}`);
  return problems;
}

/**
 * Builds detection batches: each picture whole, letterboxed into the input (scaled to fit keeping its aspect
 * ratio, top-left aligned, the rest padded with `padValue`, as DetectorSpec's LETTERBOX serves it), normalized
 * like pose inputs, with CenterNet's targets of its boxes. Training augmentation mirrors the picture and scales
 * it around the letterbox's scale; a picture scaled past the input shows a random window of itself, one scaled
 * under stays top-left with more padding.
 */
export class DetectionBatchBuilder {
  readonly images: DecodedImageStore;
  readonly grid: DetectionGrid;
  readonly #source: readonly DetectionImage[];
  readonly #options: DetectionBatchOptions;
  readonly #normalization: TensorNormalization;

  constructor(source: readonly DetectionImage[], options: DetectionBatchOptions) {
    const problems = detectionBatchProblems(options);
    if (problems.length > 0) throw AppError.invalid("detection batch options", problems);
    this.#source = source;
    this.#options = options;
    this.#normalization = options.normalization ?? IMAGENET_NORMALIZATION;
    this.grid = { width: options.inputSize.width / options.stride, height: options.inputSize.height / options.stride, stride: options.stride, numClasses: options.numClasses ?? 1 };
    this.images = new DecodedImageStore({ ...options.imageCache, readTimeoutMs: options.readTimeoutMs ?? 30_000 });
  }

  get count(): number {
    return this.#source.length;
  }

  /** A batch of the pictures `samples` (indices into the source), augmented as (seed, epoch, index) draws when training. */
  async build(epoch: number, index: number, samples: readonly number[]): Promise<DetectionBatch> {
    const { width, height } = this.#options.inputSize;
    const size = samples.length;
    const images = new Float32Array(size * 3 * width * height);
    const targets = createDetectionTargets(size, this.grid);
    const loads = samples.map((sampleIndex) => this.#load(sampleIndex));
    const infos: DetectionSampleInfo[] = [];
    for (let slot = 0; slot < size; slot++) {
      const sampleIndex = samples[slot]!;
      infos.push(this.#fill(await loads[slot]!, sampleIndex, epoch, slot, images, targets));
    }
    return { epoch, index, size, images, targets, samples: infos };
  }

  async #load(sampleIndex: number): Promise<RgbImage> {
    const source = this.#source[sampleIndex];
    if (source === undefined) throw new AppError(Code.OUT_OF_RANGE, `detection sample ${sampleIndex} is not among the ${this.#source.length}`);
    const label = imageLabel(source.imageId, source.imagePath);
    const image = await this.images.get(source.imagePath, label);
    if (image.width !== source.width || image.height !== source.height) {
      throw new AppError(Code.INVALID_ARGUMENT, `${label} decodes to ${image.width}x${image.height} but is annotated as ${source.width}x${source.height}`);
    }
    return image;
  }

  #fill(image: RgbImage, sampleIndex: number, epoch: number, slot: number, images: Float32Array, targets: DetectionTargets): DetectionSampleInfo {
    const source = this.#source[sampleIndex]!;
    const { width, height } = this.#options.inputSize;
    const fitted = Math.min(width / source.width, height / source.height);
    const augmentation = this.#options.augmentation;
    let scale = fitted;
    let flipped = false;
    let shiftX = 0;
    let shiftY = 0;
    if (augmentation !== undefined) {
      const random = new SeededRandom(this.#options.seed ?? 0, DETECTION_STREAM, epoch, sampleIndex);
      flipped = random.chance(augmentation.flipProb ?? 0);
      const factor = augmentation.scaleFactor ?? 0;
      scale = fitted * random.uniform(1 - factor, 1 + factor);
      // A picture larger than the input shows a random window of itself.
      shiftX = random.uniform(0, Math.max(0, source.width * scale - width));
      shiftY = random.uniform(0, Math.max(0, source.height * scale - height));
    }
    // Input pixel centres sample the frame at (x + 0.5 + shift) / scale − 0.5 (as cv2.resize and
    // @poseloop/detect's detectorInput); the mirror maps frame x to (W − 1) − x.
    const a = 1 / scale;
    const c = (0.5 + shiftX) / scale - 0.5;
    const affine = flipped ? ([-a, 0, source.width - 1 - c, 0, 1 / scale, (0.5 + shiftY) / scale - 0.5] as const) : ([a, 0, c, 0, 1 / scale, (0.5 + shiftY) / scale - 0.5] as const);
    const plane = width * height;
    const offset = slot * 3 * plane;
    warpToTensor(image, affine, width, height, this.#normalization, images, offset);
    const contentWidth = Math.min(width, Math.round(source.width * scale - shiftX));
    const contentHeight = Math.min(height, Math.round(source.height * scale - shiftY));
    this.#pad(images, offset, contentWidth, contentHeight);

    const boxes: TargetBox[] = [];
    for (const object of source.objects) {
      if (object.iscrowd) continue;
      const [x, y, w, h] = object.bbox;
      const left = flipped ? source.width - (x + w) : x;
      const box = { x1: left * scale - shiftX, y1: y * scale - shiftY, x2: (left + w) * scale - shiftX, y2: (y + h) * scale - shiftY };
      const clipped = { x1: Math.max(0, box.x1), y1: Math.max(0, box.y1), x2: Math.min(contentWidth, box.x2), y2: Math.min(contentHeight, box.y2) };
      const cw = clipped.x2 - clipped.x1;
      const ch = clipped.y2 - clipped.y1;
      if (!(cw >= 2 && ch >= 2)) continue;
      if (cw * ch < MIN_VISIBLE_FRACTION * (box.x2 - box.x1) * (box.y2 - box.y1)) continue;
      boxes.push({ ...clipped, ...(object.classIndex === undefined ? {} : { classIndex: object.classIndex }) });
    }
    const objects = encodeDetectionTargets(boxes, this.grid, targets, slot);
    return { sampleIndex, imageId: source.imageId, scale, shiftX, shiftY, flipped, objects };
  }

  /** The padding right of and below the picture: padValue, normalized. */
  #pad(images: Float32Array, offset: number, contentWidth: number, contentHeight: number): void {
    const { width, height } = this.#options.inputSize;
    const { mean, std, channelOrder } = this.#normalization;
    const pad = this.#options.padValue ?? 0;
    const plane = width * height;
    for (let c = 0; c < 3; c++) {
      const rgb = channelOrder === "BGR" ? 2 - c : c;
      const value = (pad - mean[rgb as 0 | 1 | 2]) / std[rgb as 0 | 1 | 2];
      const base = offset + c * plane;
      for (let y = 0; y < height; y++) {
        const row = base + y * width;
        if (y >= contentHeight) images.fill(value, row, row + width);
        else if (contentWidth < width) images.fill(value, row + Math.max(0, contentWidth), row + width);
      }
    }
  }
}

export interface DetectionDataLoaderOptions extends DetectionBatchOptions {
  readonly batchSize: number;
  /** "train": shuffled, last partial batch dropped, augmentation applied. "validation": in order, all kept, none. */
  readonly mode: "train" | "validation";
}

/**
 * Epochs of detection batches, built in the calling thread (the trainer's run is a worker thread already)
 * with the next batch's pictures decoding while the current one trains. The order is a function of (seed,
 * epoch), so `epoch(e, { startBatch })` resumes an interrupted epoch exactly.
 */
export class DetectionDataLoader {
  readonly batchSize: number;
  readonly batchesPerEpoch: number;
  readonly #builder: DetectionBatchBuilder;
  readonly #mode: "train" | "validation";
  readonly #seed: number;

  constructor(source: readonly DetectionImage[], options: DetectionDataLoaderOptions) {
    if (!(Number.isInteger(options.batchSize) && options.batchSize > 0)) throw new AppError(Code.INVALID_ARGUMENT, `batchSize must be a positive integer, got ${options.batchSize}`);
    const training = options.mode === "train";
    const { augmentation, ...rest } = options;
    this.#builder = new DetectionBatchBuilder(source, training && augmentation !== undefined ? { ...rest, augmentation } : rest);
    this.batchSize = options.batchSize;
    this.#mode = options.mode;
    this.#seed = options.seed ?? 0;
    this.batchesPerEpoch = batchCount(source.length, options.batchSize, training);
  }

  get grid(): DetectionGrid {
    return this.#builder.grid;
  }

  async *epoch(epoch: number, options: { startBatch?: number } = {}): AsyncGenerator<DetectionBatch, void, undefined> {
    const order = epochOrder(this.#builder.count, this.#seed, epoch, this.#mode === "train");
    const start = options.startBatch ?? 0;
    const take = (index: number): number[] => Array.from(order.subarray(index * this.batchSize, Math.min(order.length, (index + 1) * this.batchSize)));
    let next: Promise<DetectionBatch> | undefined;
    const settle = (batch: Promise<DetectionBatch>): Promise<DetectionBatch> => {
      // Held until awaited; a failure surfaces there, never as an unhandled rejection.
      batch.catch(() => undefined);
      return batch;
    };
    for (let index = start; index < this.batchesPerEpoch; index++) {
      const current = next ?? settle(this.#builder.build(epoch, index, take(index)));
      next = index + 1 < this.batchesPerEpoch ? settle(this.#builder.build(epoch, index + 1, take(index + 1))) : undefined;
      yield await current;
    }
  }
}
