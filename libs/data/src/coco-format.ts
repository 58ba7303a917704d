import { join } from "node:path";
import { AppError, Code } from "@poseloop/core";
import type { KeypointSchema } from "@poseloop/pose";

/**
 * The COCO keypoint annotation format (cocodataset.org/#format-data), as found in
 * `annotations/person_keypoints_<split>.json`. Field names are COCO's own, snake_case included, so files
 * round-trip with pycocotools and every tool that reads COCO.
 */
export interface CocoKeypointFile {
  info?: CocoInfo;
  licenses?: CocoLicense[];
  images: CocoImage[];
  annotations: CocoKeypointAnnotation[];
  categories: CocoPersonCategory[];
}

export interface CocoInfo {
  description?: string;
  version?: string;
  year?: number;
  contributor?: string;
  url?: string;
  date_created?: string;
  [key: string]: unknown;
}

export interface CocoLicense {
  id: number;
  name: string;
  url?: string;
}

export interface CocoImage {
  id: number;
  /** Relative to the split's image folder, e.g. "000000000139.jpg". */
  file_name: string;
  width: number;
  height: number;
  license?: number;
  date_captured?: string;
  [key: string]: unknown;
}

export interface CocoKeypointAnnotation {
  id: number;
  image_id: number;
  category_id: number;
  /**
   * [x, y, v] per keypoint: v = 0 not labelled (then x = y = 0), 1 labelled but not visible (occluded),
   * 2 labelled and visible. Coordinates are continuous: pixel (i, j) covers [i, i+1) × [j, j+1).
   */
  keypoints: number[];
  /** How many keypoints have v > 0. */
  num_keypoints: number;
  /** [x, y, width, height] in pixels. */
  bbox: [number, number, number, number];
  /** The segmentation area in pixels (COCO's evaluation buckets small/medium/large by it). */
  area: number;
  /** 1 for a crowd region (several people in one annotation, no keypoints to learn from). */
  iscrowd: 0 | 1;
  segmentation?: unknown;
  [key: string]: unknown;
}

/** The person category, with keypoint names and the 1-based skeleton COCO uses. */
export interface CocoPersonCategory {
  id: number;
  name: string;
  supercategory: string;
  keypoints: string[];
  /** Limbs as 1-based keypoint index pairs. */
  skeleton: [number, number][];
}

/** One detection in the COCO results format, as written by a person detector (validation boxes). */
export interface CocoDetection {
  image_id: number;
  category_id: number;
  bbox: [number, number, number, number];
  score: number;
}

/** An axis-aligned box in pixels. */
export interface BoundingBox {
  readonly x: number;
  readonly y: number;
  readonly width: number;
  readonly height: number;
}

/** COCO's category id for "person". */
export const PERSON_CATEGORY_ID = 1;

/** The person category for a keypoint schema (COCO's own for COCO17). */
export function personCategory(schema: KeypointSchema, id = PERSON_CATEGORY_ID): CocoPersonCategory {
  return {
    id,
    name: "person",
    supercategory: "person",
    keypoints: [...schema.names],
    skeleton: schema.skeleton.map(([a, b]) => [a + 1, b + 1]),
  };
}

/** Where a split lives in a COCO dataset folder: `annotations/person_keypoints_<split>.json` and `<split>/`. */
export function cocoLayout(dir: string, split: string): { annotationsPath: string; imagesDir: string } {
  // The split becomes a file and a folder name: letters, digits, ".", "_" and "-" only, so it cannot escape `dir`.
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(split)) {
    throw new AppError(Code.INVALID_ARGUMENT, `split name "${split}" must be letters, digits, ".", "_" or "-" (e.g. "train2017")`);
  }
  return { annotationsPath: join(dir, "annotations", `person_keypoints_${split}.json`), imagesDir: join(dir, split) };
}
