import { AppError, Code } from "@poseloop/core";
import type { PoseInstance, ValidationImage } from "./coco-reader.js";

/**
 * The loader's samples packed into a few flat arrays, so that sending them to each worker is one cheap
 * structured clone instead of one object per person. Sample i is a training instance (box + keypoints) or a
 * validation box (no keypoints).
 */
export interface SampleTable {
  readonly kind: "instances" | "boxes";
  readonly count: number;
  /** Keypoints per sample; 0 for boxes. */
  readonly numKeypoints: number;
  /** Distinct image paths; `imageIndex` points into it. */
  readonly imagePaths: readonly string[];
  readonly imageIndex: Int32Array;
  readonly imageIds: Float64Array;
  /** Width and height of each sample's image as annotated. */
  readonly imageSizes: Int32Array;
  /** COCO annotation id per sample; NaN for validation boxes. */
  readonly annotationIds: Float64Array;
  /** [x, y, width, height] per sample. */
  readonly boxes: Float64Array;
  /** The box score (1 for ground truth). */
  readonly scores: Float64Array;
  /** The annotation's area for instances, the box's area for validation boxes. */
  readonly areas: Float64Array;
  /** [x, y] per keypoint per sample (instances only). */
  readonly keypoints: Float32Array;
  /** COCO visibility flags per keypoint per sample (instances only). */
  readonly visibility: Uint8Array;
}

function pathIndexer(): { paths: string[]; indexOf: (path: string) => number } {
  const paths: string[] = [];
  const index = new Map<string, number>();
  return {
    paths,
    indexOf: (path) => {
      let i = index.get(path);
      if (i === undefined) {
        i = paths.length;
        paths.push(path);
        index.set(path, i);
      }
      return i;
    },
  };
}

/** Packs training instances. Values are copied as they are: bad ones fail their own sample, not the table. */
export function sampleTableFromInstances(instances: readonly PoseInstance[], numKeypoints: number): SampleTable {
  const n = instances.length;
  const { paths, indexOf } = pathIndexer();
  const table = {
    kind: "instances" as const,
    count: n,
    numKeypoints,
    imagePaths: paths,
    imageIndex: new Int32Array(n),
    imageIds: new Float64Array(n),
    imageSizes: new Int32Array(2 * n),
    annotationIds: new Float64Array(n),
    boxes: new Float64Array(4 * n),
    scores: new Float64Array(n).fill(1),
    areas: new Float64Array(n),
    keypoints: new Float32Array(2 * numKeypoints * n),
    visibility: new Uint8Array(numKeypoints * n),
  };
  instances.forEach((instance, i) => {
    if (instance.keypoints.length !== 2 * numKeypoints || instance.visibility.length !== numKeypoints) {
      throw new AppError(
        Code.INVALID_ARGUMENT,
        `instance ${i} (annotation ${instance.annotationId}) has ${instance.visibility.length} keypoints, the schema ${numKeypoints}`,
      );
    }
    table.imageIndex[i] = indexOf(instance.imagePath);
    table.imageIds[i] = instance.imageId;
    table.imageSizes[2 * i] = instance.imageWidth;
    table.imageSizes[2 * i + 1] = instance.imageHeight;
    table.annotationIds[i] = instance.annotationId;
    table.boxes.set([instance.bbox.x, instance.bbox.y, instance.bbox.width, instance.bbox.height], 4 * i);
    table.areas[i] = instance.area;
    table.keypoints.set(instance.keypoints, 2 * numKeypoints * i);
    table.visibility.set(instance.visibility, numKeypoints * i);
  });
  return table;
}

/** Packs validation boxes (ground truth or detections), image by image, each image's boxes in their order. */
export function sampleTableFromImages(images: readonly ValidationImage[]): SampleTable {
  const n = images.reduce((sum, image) => sum + image.boxes.length, 0);
  const { paths, indexOf } = pathIndexer();
  const table = {
    kind: "boxes" as const,
    count: n,
    numKeypoints: 0,
    imagePaths: paths,
    imageIndex: new Int32Array(n),
    imageIds: new Float64Array(n),
    imageSizes: new Int32Array(2 * n),
    annotationIds: new Float64Array(n).fill(Number.NaN),
    boxes: new Float64Array(4 * n),
    scores: new Float64Array(n),
    areas: new Float64Array(n),
    keypoints: new Float32Array(0),
    visibility: new Uint8Array(0),
  };
  let i = 0;
  for (const image of images) {
    const pathIndex = indexOf(image.imagePath);
    for (const box of image.boxes) {
      table.imageIndex[i] = pathIndex;
      table.imageIds[i] = image.imageId;
      table.imageSizes[2 * i] = image.width;
      table.imageSizes[2 * i + 1] = image.height;
      table.boxes.set([box.bbox.x, box.bbox.y, box.bbox.width, box.bbox.height], 4 * i);
      table.scores[i] = box.score;
      table.areas[i] = box.bbox.width * box.bbox.height;
      i++;
    }
  }
  return table;
}
