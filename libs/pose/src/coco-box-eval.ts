import { requireAllFinite, requireFinite, requireLength, requireNonNegative } from "./argument-checks.js";
import {
  COCO_AP75_INDEX,
  COCO_AREA_ALL,
  COCO_AREA_LARGE,
  COCO_AREA_MEDIUM,
  COCO_AREA_SMALL,
  COCO_SIMILARITY_THRESHOLDS,
  type CocoDetectionRef,
  type CocoEvalCategoryOptions,
  type CocoEvalResult,
  type CocoGroundTruthRef,
  type CocoImageRef,
  type CocoSummarizer,
  runCocoEval,
} from "./coco-eval-core.js";

/** A ground-truth box as COCO's annotation file stores it (only the fields box evaluation reads). */
export interface CocoBoxGroundTruth extends CocoGroundTruthRef {
  /** [x, y, w, h] in image pixels. */
  readonly bbox: ArrayLike<number>;
  /**
   * The annotation's area, what COCOeval's area ranges test (COCO's is the segmentation mask's, smaller than
   * the box). Default: the box's w·h, what an annotation file without segmentations would give.
   */
  readonly area?: number;
  /** A crowd region: ignored, any number of detections may match it, and IoU with it is over the detection's area. */
  readonly iscrowd?: number | boolean;
}

/** A detection in COCO's results format. */
export interface CocoBoxDetection extends CocoDetectionRef {
  /** [x, y, w, h] in image pixels; its area is w·h (as loadRes computes it). */
  readonly bbox: ArrayLike<number>;
}

export type CocoBoxEvalOptions = CocoEvalCategoryOptions;

/**
 * COCOeval's twelve box numbers (summarize() for iouType 'bbox'), in [0, 1], or −1 where there is no ground
 * truth to measure; plus the recall at IoU .50 and .75 with 100 detections, which the keypoint metrics carry.
 */
export interface CocoBoxStats {
  /** AP at IoU .50:.05:.95, all areas, 100 detections per image. */
  readonly ap: number;
  readonly ap50: number;
  readonly ap75: number;
  readonly apSmall: number;
  readonly apMedium: number;
  readonly apLarge: number;
  /** AR with at most 1, 10 and 100 detections per image. */
  readonly ar1: number;
  readonly ar10: number;
  readonly ar: number;
  readonly arSmall: number;
  readonly arMedium: number;
  readonly arLarge: number;
  /** AR at IoU .50 and .75 alone, 100 detections. */
  readonly ar50: number;
  readonly ar75: number;
}

export interface CocoBoxEvaluation extends CocoEvalResult<CocoBoxStats> {
  /** COCOeval's eval['precision']: [T = 10][R = 101][K categories][A = 4 area ranges][M = 3 maxDets], −1 where no GT. */
  readonly precision: Float64Array;
  /** COCOeval's eval['recall']: [T][K][A][M], −1 where no GT. */
  readonly recall: Float64Array;
  /** Detections that took part (after image and category selection and the cap of 100 per image). */
  readonly numDetections: number;
}

/** IoU thresholds .50:.05:.95, bit for bit as COCOeval's (the same values as its OKS thresholds). */
export const COCO_IOU_THRESHOLDS: readonly number[] = COCO_SIMILARITY_THRESHOLDS;
/** COCOeval's box area ranges: all, small (below 32²), medium (32² to 96²), large (above 96²). */
export const COCO_BOX_AREA_RANGES: readonly (readonly [number, number])[] = Object.freeze([COCO_AREA_ALL, COCO_AREA_SMALL, COCO_AREA_MEDIUM, COCO_AREA_LARGE]);
/** COCOeval's maxDets for boxes. */
export const COCO_BOX_MAX_DETECTIONS: readonly number[] = Object.freeze([1, 10, 100]);

/**
 * pycocotools' maskUtils.iou of two [x, y, w, h] boxes (bbIou): the intersection over the union, or over the
 * detection's own area when the ground truth is a crowd region.
 */
export function cocoBoxIou(dt: ArrayLike<number>, gt: ArrayLike<number>, crowd = false): number {
  const [dx, dy, dw, dh] = [dt[0] as number, dt[1] as number, dt[2] as number, dt[3] as number];
  const [gx, gy, gw, gh] = [gt[0] as number, gt[1] as number, gt[2] as number, gt[3] as number];
  const w = Math.min(dx + dw, gx + gw) - Math.max(dx, gx);
  if (w <= 0) return 0;
  const h = Math.min(dy + dh, gy + gh) - Math.max(dy, gy);
  if (h <= 0) return 0;
  const intersection = w * h;
  const union = crowd ? dw * dh : dw * dh + gw * gh - intersection;
  return intersection / union;
}

/**
 * COCO box evaluation reproducing pycocotools' COCOeval with iouType 'bbox': evaluate(), accumulate() and
 * summarize() with its defaults (IoU .50:.05:.95; areas all, small, medium, large; maxDets 1, 10, 100; 101
 * recall points with COCOeval's precision envelope and its precision = tp / (tp + fp + ε)).
 *
 * As pycocotools: crowd GTs are ignored and match any number of detections with IoU over the detection's area;
 * GTs outside an area range (by their `area`) are ignored there, as are detections matched to ignored GTs and
 * unmatched detections whose box area is outside the range; each image keeps its 100 best detections (ties in
 * input order), matched once, and the 1- and 10-detection numbers take the first of those per image; images
 * are taken in ascending id; means follow numpy's pairwise order.
 *
 * `images` selects the images, with or without people; a detection on another image is a RangeError (loadRes
 * refuses it). Without it, every image mentioned by a GT or a detection counts.
 */
export function evaluateBoxes(
  groundTruths: readonly CocoBoxGroundTruth[],
  detections: readonly CocoBoxDetection[],
  images?: readonly CocoImageRef[],
  options: CocoBoxEvalOptions = {},
): CocoBoxEvaluation {
  groundTruths.forEach((gt, i) => {
    requireFinite(gt.image_id, `groundTruths[${i}].image_id`);
    requireLength(gt.bbox, 4, `groundTruths[${i}].bbox`);
    requireAllFinite(gt.bbox, `groundTruths[${i}].bbox`);
    if (gt.area !== undefined) requireNonNegative(gt.area, `groundTruths[${i}].area`);
  });
  detections.forEach((dt, i) => {
    requireFinite(dt.image_id, `detections[${i}].image_id`);
    requireLength(dt.bbox, 4, `detections[${i}].bbox`);
    requireAllFinite(dt.bbox, `detections[${i}].bbox`);
    requireFinite(dt.score, `detections[${i}].score`);
  });
  return runCocoEval({
    groundTruths,
    detections,
    images,
    categoryIds: options.categoryIds,
    areaRanges: COCO_BOX_AREA_RANGES,
    // Each image keeps its 100 best detections, matched once; the 1- and 10-detection numbers take the first of those.
    maxDets: COCO_BOX_MAX_DETECTIONS,
    gtAreas: Float64Array.from(groundTruths, (gt) => gt.area ?? (gt.bbox[2] as number) * (gt.bbox[3] as number)),
    dtAreas: Float64Array.from(detections, (dt) => (dt.bbox[2] as number) * (dt.bbox[3] as number)),
    similarity: (d, g, crowd) => cocoBoxIou((detections[d] as CocoBoxDetection).bbox, (groundTruths[g] as CocoBoxGroundTruth).bbox, crowd),
    summarize,
  });
}

/** COCOeval.summarize's _summarizeDets. */
function summarize({ ap, ar }: CocoSummarizer): CocoBoxStats {
  const last = COCO_BOX_MAX_DETECTIONS.length - 1;
  return {
    ap: ap(0, last),
    ap50: ap(0, last, 0),
    ap75: ap(0, last, COCO_AP75_INDEX),
    apSmall: ap(1, last),
    apMedium: ap(2, last),
    apLarge: ap(3, last),
    ar1: ar(0, 0),
    ar10: ar(0, 1),
    ar: ar(0, last),
    arSmall: ar(1, last),
    arMedium: ar(2, last),
    arLarge: ar(3, last),
    ar50: ar(0, last, 0),
    ar75: ar(0, last, COCO_AP75_INDEX),
  };
}
