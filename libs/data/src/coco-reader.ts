import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { AppError, Code } from "@poseloop/core";
import { COCO17, type KeypointSchema } from "@poseloop/pose";
import { cocoLayout, type BoundingBox, type CocoImage, type CocoKeypointFile } from "./coco-format.js";
import { invalidFile, parseCocoKeypointFile } from "./coco-keypoint-file.js";

/** One annotated person, ready for a top-down training pipeline. */
export interface PoseInstance {
  readonly annotationId: number;
  readonly imageId: number;
  readonly imagePath: string;
  readonly imageWidth: number;
  readonly imageHeight: number;
  /** The annotation's box clipped to the image. */
  readonly bbox: BoundingBox;
  /** [x, y] per keypoint; (0, 0) where the keypoint is not labelled. */
  readonly keypoints: Float32Array;
  /** COCO's flag per keypoint: 0 not labelled, 1 labelled but occluded, 2 visible. */
  readonly visibility: Uint8Array;
  readonly numKeypoints: number;
  readonly area: number;
}

/** A person box to run the pose model on during validation: ground truth (score 1) or a detection. */
export interface ValidationBox {
  readonly bbox: BoundingBox;
  readonly score: number;
}

/** One image with the person boxes to validate on. */
export interface ValidationImage {
  readonly imageId: number;
  readonly imagePath: string;
  readonly width: number;
  readonly height: number;
  readonly boxes: readonly ValidationBox[];
}

export interface InstanceFilter {
  /** Annotations with fewer labelled keypoints (v > 0) are skipped; default 1, as top-down trainers do. */
  minKeypoints?: number;
  /** Skip crowd annotations; default true. */
  dropCrowd?: boolean;
}

export interface ReadCocoKeypointsOptions extends InstanceFilter {
  /** The dataset folder holding `annotations/` and one image folder per split. */
  dir: string;
  /** The split, e.g. "train2017" or "val2017". */
  split: string;
  /** The keypoint schema the file must match; default COCO17. */
  schema?: KeypointSchema;
  /** Also check that every image file exists (one stat per image); default false. */
  checkImageFiles?: boolean;
  /** Deadline for reading the annotation file (and the image checks); default 120 s. */
  timeoutMs?: number;
}

/** A validated COCO keypoint split. */
export interface CocoKeypointDataset {
  readonly annotationsPath: string;
  readonly imagesDir: string;
  readonly schema: KeypointSchema;
  /** The file as read (validated; `iscrowd` filled in where absent). */
  readonly file: CocoKeypointFile;
  /** The annotations that passed the filter, for training. */
  readonly instances: readonly PoseInstance[];
  /** Every image with the boxes of its filtered instances, for validation on ground-truth boxes. */
  readonly groundTruthBoxes: readonly ValidationImage[];
}

/**
 * Reads and validates one split of a COCO-layout dataset folder. A missing annotation file is NOT_FOUND;
 * invalid JSON or content is INVALID_ARGUMENT listing every problem found, never just the first.
 */
export async function readCocoKeypoints(options: ReadCocoKeypointsOptions): Promise<CocoKeypointDataset> {
  const { annotationsPath, imagesDir } = cocoLayout(options.dir, options.split);
  const schema = options.schema ?? COCO17;
  const signal = AbortSignal.timeout(options.timeoutMs ?? 120_000);
  const source = `annotation file for split "${options.split}"`;
  let text: string;
  try {
    text = await readFile(annotationsPath, { encoding: "utf8", signal });
  } catch (error) {
    const mapped = AppError.from(error);
    if (mapped.code === Code.NOT_FOUND) {
      throw new AppError(Code.NOT_FOUND, `no ${source} (expected annotations/person_keypoints_${options.split}.json)`, { cause: error });
    }
    throw mapped;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new AppError(Code.INVALID_ARGUMENT, `the ${source} is not valid JSON`, { cause: error });
  }
  const file = parseCocoKeypointFile(json, schema, source);
  if (options.checkImageFiles === true) {
    const missing: string[] = [];
    for (const image of file.images) {
      signal.throwIfAborted();
      const found = await stat(join(imagesDir, image.file_name)).then(
        (info) => info.isFile(),
        () => false,
      );
      if (!found) missing.push(`image file "${image.file_name}" (id ${image.id}) is missing from ${options.split}/`);
    }
    if (missing.length > 0) throw invalidFile(source, missing);
  }
  const instances = cocoPoseInstances(file, imagesDir, schema, options);
  return { annotationsPath, imagesDir, schema, file, instances, groundTruthBoxes: groundTruthBoxes(file, imagesDir, instances) };
}

/**
 * The training instances of a validated file: annotations passing the filter whose box, clipped to the image,
 * is not empty. Coordinates of unlabelled keypoints are set to 0 whatever the file says.
 */
export function cocoPoseInstances(
  file: CocoKeypointFile,
  imagesDir: string,
  schema: KeypointSchema = COCO17,
  filter: InstanceFilter = {},
): PoseInstance[] {
  const k = schema.names.length;
  const minKeypoints = filter.minKeypoints ?? 1;
  const dropCrowd = filter.dropCrowd ?? true;
  const images = new Map<number, CocoImage>(file.images.map((image) => [image.id, image]));
  const instances: PoseInstance[] = [];
  for (const annotation of file.annotations) {
    const image = images.get(annotation.image_id);
    if (image === undefined) continue;
    if (dropCrowd && annotation.iscrowd === 1) continue;
    const keypoints = new Float32Array(2 * k);
    const visibility = new Uint8Array(k);
    let labelled = 0;
    for (let j = 0; j < k; j++) {
      const v = annotation.keypoints[3 * j + 2]!;
      visibility[j] = v;
      if (v === 0) continue;
      labelled++;
      keypoints[2 * j] = annotation.keypoints[3 * j]!;
      keypoints[2 * j + 1] = annotation.keypoints[3 * j + 1]!;
    }
    if (labelled < minKeypoints) continue;
    const bbox = clipBox(annotation.bbox, image.width, image.height);
    if (bbox === undefined) continue;
    instances.push({
      annotationId: annotation.id,
      imageId: image.id,
      imagePath: join(imagesDir, image.file_name),
      imageWidth: image.width,
      imageHeight: image.height,
      bbox,
      keypoints,
      visibility,
      numKeypoints: labelled,
      area: annotation.area,
    });
  }
  return instances;
}

function groundTruthBoxes(file: CocoKeypointFile, imagesDir: string, instances: readonly PoseInstance[]): ValidationImage[] {
  const boxes = new Map<number, ValidationBox[]>();
  for (const instance of instances) {
    const list = boxes.get(instance.imageId) ?? [];
    list.push({ bbox: instance.bbox, score: 1 });
    boxes.set(instance.imageId, list);
  }
  return file.images.map((image) => ({
    imageId: image.id,
    imagePath: join(imagesDir, image.file_name),
    width: image.width,
    height: image.height,
    boxes: boxes.get(image.id) ?? [],
  }));
}

/** A box clipped to the image, or undefined when nothing of it is left. */
export function clipBox(bbox: readonly [number, number, number, number], width: number, height: number): BoundingBox | undefined {
  const [x, y, w, h] = bbox;
  const x0 = Math.max(0, x);
  const y0 = Math.max(0, y);
  const x1 = Math.min(width, x + w);
  const y1 = Math.min(height, y + h);
  if (!(x1 > x0) || !(y1 > y0)) return undefined;
  return { x: x0, y: y0, width: x1 - x0, height: y1 - y0 };
}
