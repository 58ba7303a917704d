import { requireAllFinite, requireFinite, requireLength, requireNonNegative, requirePositiveInteger } from "./argument-checks.js";
import {
  COCO_AP75_INDEX,
  COCO_AREA_ALL,
  COCO_AREA_LARGE,
  COCO_AREA_MEDIUM,
  COCO_SIMILARITY_THRESHOLDS,
  type CocoDetectionRef,
  type CocoEvalCategoryOptions,
  type CocoEvalResult,
  type CocoGroundTruthRef,
  type CocoImageRef,
  type CocoSummarizer,
  runCocoEval,
} from "./coco-eval-core.js";
import { COCO17 } from "./keypoint-schema.js";
import { cocoOks, oksVariances } from "./oks.js";

export { COCO_RECALL_THRESHOLDS } from "./coco-eval-core.js";
export type { CocoImageRef } from "./coco-eval-core.js";

/** A ground-truth person as COCO's annotation file stores it (only the fields keypoint evaluation reads). */
export interface CocoKeypointGroundTruth extends CocoGroundTruthRef {
  /** Default: the position in the list plus one. Ids must be unique; 0 behaves as in pycocotools (see evaluateKeypoints). */
  readonly id?: number;
  /** [x, y, v] × K; v > 0 marks a labelled keypoint. */
  readonly keypoints: ArrayLike<number>;
  /** 0 makes the person ignored, whatever its keypoints say (as COCOeval). */
  readonly num_keypoints: number;
  /** Segment area in pixels²: the OKS scale and the area-range filter. */
  readonly area: number;
  /** [x, y, w, h]; used for OKS when no keypoint is labelled. */
  readonly bbox: ArrayLike<number>;
}

/** A detection in COCO's results format. */
export interface CocoKeypointDetection extends CocoDetectionRef {
  /** [x, y, score] × K in image pixels. */
  readonly keypoints: ArrayLike<number>;
}

export interface CocoKeypointEvalOptions extends CocoEvalCategoryOptions {
  /** Per-keypoint OKS sigmas; their count is K. Default: COCO-17's. */
  readonly sigmas?: readonly number[];
  /** Detections kept per image, the highest scoring. Default 20 (COCOeval's keypoint maxDets). */
  readonly maxDetections?: number;
}

/** COCOeval's ten keypoint numbers, in [0, 1], or −1 where there is no ground truth to measure. */
export interface CocoKeypointStats {
  readonly ap: number;
  readonly ap50: number;
  readonly ap75: number;
  readonly apMedium: number;
  readonly apLarge: number;
  readonly ar: number;
  readonly ar50: number;
  readonly ar75: number;
  readonly arMedium: number;
  readonly arLarge: number;
}

export interface CocoKeypointEvaluation extends CocoEvalResult<CocoKeypointStats> {
  /** COCOeval's eval['precision'] without the maxDets axis: [T = 10][R = 101][K categories][A = 3 area ranges], −1 where no GT. */
  readonly precision: Float64Array;
  /** COCOeval's eval['recall']: [T][K][A], −1 where no GT. */
  readonly recall: Float64Array;
}

/** OKS thresholds .50:.05:.95, bit for bit as COCOeval's. */
export const COCO_OKS_THRESHOLDS: readonly number[] = COCO_SIMILARITY_THRESHOLDS;
/** COCOeval's keypoint area ranges: all, medium (32² to 96²), large (above 96²). */
export const COCO_KEYPOINT_AREA_RANGES: readonly (readonly [number, number])[] = Object.freeze([COCO_AREA_ALL, COCO_AREA_MEDIUM, COCO_AREA_LARGE]);

/**
 * COCO keypoint evaluation reproducing pycocotools' COCOeval with iouType 'keypoints': evaluate(),
 * accumulate() and summarize() with its defaults (maxDets 20; areas all, medium, large; OKS .50:.05:.95;
 * 101 recall points with COCOeval's precision envelope and its precision = tp / (tp + fp + ε)).
 *
 * Kept from pycocotools on purpose: GTs with iscrowd or num_keypoints == 0 are ignored, as are GTs outside
 * the area range, detections matched to ignored GTs and unmatched detections whose area (the box around all
 * their keypoints, as loadRes computes it) is outside the range; crowd GTs match any number of detections;
 * detections are ranked by score with ties kept in input order (mergesort), per image and over the dataset;
 * images are taken in ascending id; sums and means follow numpy's pairwise order. A match to a GT whose id
 * is 0 counts as no match, as in pycocotools (COCO ids start at 1).
 *
 * `images` (ids or COCO image records) selects the images, with or without people; GTs on other images are
 * left out and a detection on one is a RangeError, as loadRes refuses it. Without `images`, every image
 * mentioned by a GT or a detection counts.
 *
 * Numbers agree with pycocotools exactly except where an OKS lies within an ulp of a threshold: numpy's exp
 * and V8's differ in the last bit for some inputs.
 *
 * Throws a RangeError for keypoint arrays that are not 3K long, NaN or infinite values, or a negative area.
 */
export function evaluateKeypoints(
  groundTruths: readonly CocoKeypointGroundTruth[],
  detections: readonly CocoKeypointDetection[],
  images?: readonly CocoImageRef[],
  options: CocoKeypointEvalOptions = {},
): CocoKeypointEvaluation {
  const sigmas = options.sigmas ?? COCO17.sigmas;
  const k = sigmas.length;
  if (k === 0) throw new RangeError("sigmas must not be empty");
  for (const sigma of sigmas) if (!(sigma > 0 && Number.isFinite(sigma))) throw new RangeError(`OKS sigmas must be positive, got ${sigma}`);
  const maxDetections = options.maxDetections ?? 20;
  requirePositiveInteger(maxDetections, "maxDetections");
  groundTruths.forEach((gt, i) => checkGroundTruth(gt, i, k));
  detections.forEach((dt, i) => checkDetection(dt, i, k));

  const variances = oksVariances(sigmas);
  const scratch = new Float64Array(k);
  return runCocoEval({
    groundTruths,
    detections,
    images,
    categoryIds: options.categoryIds,
    areaRanges: COCO_KEYPOINT_AREA_RANGES,
    maxDets: [maxDetections],
    // Ignored besides crowd regions: people without labelled keypoints, whatever their keypoints say (as COCOeval).
    alwaysIgnored: (gt) => gt.num_keypoints === 0,
    gtAreas: Float64Array.from(groundTruths, (gt) => gt.area),
    dtAreas: Float64Array.from(detections, (dt) => keypointExtentArea(dt.keypoints, k)),
    similarity: (d, g) => {
      const gt = groundTruths[g] as CocoKeypointGroundTruth;
      return cocoOks((detections[d] as CocoKeypointDetection).keypoints, 0, gt.keypoints, gt.area, gt.bbox, variances, scratch);
    },
    summarize,
  });
}

function checkGroundTruth(gt: CocoKeypointGroundTruth, i: number, k: number): void {
  requireFinite(gt.image_id, `groundTruths[${i}].image_id`);
  requireLength(gt.keypoints, 3 * k, `groundTruths[${i}].keypoints`);
  requireAllFinite(gt.keypoints, `groundTruths[${i}].keypoints`);
  requireLength(gt.bbox, 4, `groundTruths[${i}].bbox`);
  requireAllFinite(gt.bbox, `groundTruths[${i}].bbox`);
  requireNonNegative(gt.area, `groundTruths[${i}].area`);
  requireFinite(gt.num_keypoints, `groundTruths[${i}].num_keypoints`);
}

function checkDetection(dt: CocoKeypointDetection, i: number, k: number): void {
  requireFinite(dt.image_id, `detections[${i}].image_id`);
  requireLength(dt.keypoints, 3 * k, `detections[${i}].keypoints`);
  requireAllFinite(dt.keypoints, `detections[${i}].keypoints`);
  requireFinite(dt.score, `detections[${i}].score`);
}

/** The area loadRes gives a keypoint result: the box around all its keypoints, whatever their scores. */
function keypointExtentArea(keypoints: ArrayLike<number>, k: number): number {
  let x0 = Infinity;
  let x1 = -Infinity;
  let y0 = Infinity;
  let y1 = -Infinity;
  for (let j = 0; j < k; j++) {
    const x = keypoints[3 * j] as number;
    const y = keypoints[3 * j + 1] as number;
    if (x < x0) x0 = x;
    if (x > x1) x1 = x;
    if (y < y0) y0 = y;
    if (y > y1) y1 = y;
  }
  return (x1 - x0) * (y1 - y0);
}

/** COCOeval.summarize's _summarizeKps (one maxDet). */
function summarize({ ap, ar }: CocoSummarizer): CocoKeypointStats {
  return {
    ap: ap(0, 0),
    ap50: ap(0, 0, 0),
    ap75: ap(0, 0, COCO_AP75_INDEX),
    apMedium: ap(1, 0),
    apLarge: ap(2, 0),
    ar: ar(0, 0),
    ar50: ar(0, 0, 0),
    ar75: ar(0, 0, COCO_AP75_INDEX),
    arMedium: ar(1, 0),
    arLarge: ar(2, 0),
  };
}
