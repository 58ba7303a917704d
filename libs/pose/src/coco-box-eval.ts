import { requireAllFinite, requireFinite, requireLength, requireNonNegative } from "./argument-checks.js";
import { COCO_OKS_THRESHOLDS, COCO_RECALL_THRESHOLDS, type CocoImageRef } from "./coco-keypoint-eval.js";
import { FLOAT64_SPACING_1 } from "./oks.js";
import { pairwiseSum } from "./pairwise-sum.js";

/** A ground-truth box as COCO's annotation file stores it (only the fields box evaluation reads). */
export interface CocoBoxGroundTruth {
  /** Default: the position in the list plus one. A match to id 0 counts as none, as in pycocotools. */
  readonly id?: number;
  readonly image_id: number;
  /** Default 1 (person). */
  readonly category_id?: number;
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
export interface CocoBoxDetection {
  readonly image_id: number;
  /** Default 1 (person). */
  readonly category_id?: number;
  /** [x, y, w, h] in image pixels; its area is w·h (as loadRes computes it). */
  readonly bbox: ArrayLike<number>;
  readonly score: number;
}

export interface CocoBoxEvalOptions {
  /** Categories to evaluate. Default: those of the ground truths, or [1] when there are none. */
  readonly categoryIds?: readonly number[];
}

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

export interface CocoBoxEvaluation {
  readonly stats: CocoBoxStats;
  /** COCOeval's eval['precision']: [T = 10][R = 101][K categories][A = 4 area ranges][M = 3 maxDets], −1 where no GT. */
  readonly precision: Float64Array;
  /** COCOeval's eval['recall']: [T][K][A][M], −1 where no GT. */
  readonly recall: Float64Array;
  readonly categoryIds: readonly number[];
  readonly imageIds: readonly number[];
  readonly numGroundTruths: number;
  /** Detections that took part (after image and category selection and the cap of 100 per image). */
  readonly numDetections: number;
}

/** IoU thresholds .50:.05:.95, bit for bit as COCOeval's (the same values as its OKS thresholds). */
export const COCO_IOU_THRESHOLDS: readonly number[] = COCO_OKS_THRESHOLDS;
/** COCOeval's box area ranges: all, small (below 32²), medium (32² to 96²), large (above 96²). */
export const COCO_BOX_AREA_RANGES: readonly (readonly [number, number])[] = Object.freeze([
  Object.freeze([0, 1e10] as const),
  Object.freeze([0, 32 ** 2] as const),
  Object.freeze([32 ** 2, 96 ** 2] as const),
  Object.freeze([96 ** 2, 1e10] as const),
]);
/** COCOeval's maxDets for boxes. */
export const COCO_BOX_MAX_DETECTIONS: readonly number[] = Object.freeze([1, 10, 100]);

const T = COCO_IOU_THRESHOLDS.length;
const R = COCO_RECALL_THRESHOLDS.length;
const A = COCO_BOX_AREA_RANGES.length;
const M = COCO_BOX_MAX_DETECTIONS.length;
const MAX_DETECTIONS = 100;
const AP75_INDEX = 5;

interface Cell {
  readonly gts: number[];
  /** Detections, best score first (stable), at most 100. */
  dts: number[];
  /** IoU, detection-major: iou[d · G + g], g in input order. */
  iou: Float64Array;
}

/** COCOeval.evaluateImg's result for one image, category and area range. */
interface ImageEvaluation {
  readonly scores: Float64Array;
  /** [t][d]: matched to a GT whose id is not 0. */
  readonly matched: Uint8Array;
  /** [t][d]: dtIgnore. */
  readonly ignored: Uint8Array;
  readonly regular: number;
}

const imageIdOf = (image: CocoImageRef): number => (typeof image === "number" ? image : image.id);
const sortedUnique = (values: Iterable<number>): number[] => [...new Set(values)].sort((a, b) => a - b);
const isCrowd = (gt: CocoBoxGroundTruth): boolean => gt.iscrowd === true || (typeof gt.iscrowd === "number" && gt.iscrowd !== 0);

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
  const imageIds = sortedUnique(images !== undefined ? images.map(imageIdOf) : [...groundTruths.map((gt) => gt.image_id), ...detections.map((dt) => dt.image_id)]);
  for (const id of imageIds) requireFinite(id, "image id");
  const imageSet = new Set(imageIds);
  if (images !== undefined) {
    for (const dt of detections) if (!imageSet.has(dt.image_id)) throw new RangeError(`detection on image ${dt.image_id}, which is not among the evaluated images`);
  }
  const categoryIds = sortedUnique(options.categoryIds ?? (groundTruths.length > 0 ? groundTruths.map((gt) => gt.category_id ?? 1) : [1]));

  const cells = new Map<number, Map<number, Cell>>(categoryIds.map((c) => [c, new Map<number, Cell>()]));
  const cellOf = (category: number, image: number): Cell | undefined => {
    const byImage = cells.get(category);
    if (byImage === undefined || !imageSet.has(image)) return undefined;
    let cell = byImage.get(image);
    if (cell === undefined) {
      cell = { gts: [], dts: [], iou: new Float64Array(0) };
      byImage.set(image, cell);
    }
    return cell;
  };
  groundTruths.forEach((gt, i) => cellOf(gt.category_id ?? 1, gt.image_id)?.gts.push(i));
  detections.forEach((dt, i) => cellOf(dt.category_id ?? 1, dt.image_id)?.dts.push(i));

  const gtIds = Float64Array.from(groundTruths, (gt, i) => gt.id ?? i + 1);
  const gtCrowd = Uint8Array.from(groundTruths, (gt) => (isCrowd(gt) ? 1 : 0));
  const gtAreas = Float64Array.from(groundTruths, (gt) => gt.area ?? (gt.bbox[2] as number) * (gt.bbox[3] as number));
  const dtAreas = Float64Array.from(detections, (dt) => (dt.bbox[2] as number) * (dt.bbox[3] as number));

  let numGroundTruths = 0;
  let numDetections = 0;
  for (const byImage of cells.values()) {
    for (const cell of byImage.values()) {
      cell.dts = cell.dts
        .map((index, order) => ({ index, order, score: (detections[index] as CocoBoxDetection).score }))
        .sort((a, b) => b.score - a.score || a.order - b.order)
        .slice(0, MAX_DETECTIONS)
        .map((entry) => entry.index);
      const g = cell.gts.length;
      const d = cell.dts.length;
      numGroundTruths += g;
      numDetections += d;
      cell.iou = new Float64Array(d * g);
      for (let di = 0; di < d; di++) {
        const box = (detections[cell.dts[di] as number] as CocoBoxDetection).bbox;
        for (let gi = 0; gi < g; gi++) {
          const index = cell.gts[gi] as number;
          cell.iou[di * g + gi] = cocoBoxIou(box, (groundTruths[index] as CocoBoxGroundTruth).bbox, gtCrowd[index] === 1);
        }
      }
    }
  }

  const numCategories = categoryIds.length;
  const precision = new Float64Array(T * R * numCategories * A * M).fill(-1);
  const recall = new Float64Array(T * numCategories * A * M).fill(-1);
  categoryIds.forEach((category, c) => {
    const byImage = cells.get(category) as Map<number, Cell>;
    for (let a = 0; a < A; a++) {
      const range = COCO_BOX_AREA_RANGES[a] as readonly [number, number];
      const evaluations: ImageEvaluation[] = [];
      for (const image of imageIds) {
        const cell = byImage.get(image);
        if (cell === undefined) continue;
        const evaluation = evaluateImage(cell, range, gtIds, gtCrowd, gtAreas, dtAreas, detections);
        if (evaluation !== undefined) evaluations.push(evaluation);
      }
      for (let m = 0; m < M; m++) accumulate(evaluations, COCO_BOX_MAX_DETECTIONS[m] as number, c, a, m, numCategories, precision, recall);
    }
  });

  return { stats: summarize(precision, recall, numCategories), precision, recall, categoryIds, imageIds, numGroundTruths, numDetections };
}

/** COCOeval.evaluateImg for one image, category and area range (maxDet 100); undefined where it returns None. */
function evaluateImage(
  cell: Cell,
  [low, high]: readonly [number, number],
  gtIds: Float64Array,
  gtCrowd: Uint8Array,
  gtAreas: Float64Array,
  dtAreas: Float64Array,
  detections: readonly CocoBoxDetection[],
): ImageEvaluation | undefined {
  const g = cell.gts.length;
  const d = cell.dts.length;
  if (g === 0 && d === 0) return undefined;
  // GTs ignored here are sorted last (stable), as COCOeval's mergesort on _ignore.
  const flags = cell.gts.map((index) => {
    const area = gtAreas[index] as number;
    return gtCrowd[index] === 1 || area < low || area > high ? 1 : 0;
  });
  const order = [...flags.keys()].sort((x, y) => (flags[x] as number) - (flags[y] as number) || x - y);
  const ignored = Uint8Array.from(order, (o) => flags[o] as number);
  const crowd = Uint8Array.from(order, (o) => gtCrowd[cell.gts[o] as number] as number);
  const ids = Float64Array.from(order, (o) => gtIds[cell.gts[o] as number] as number);
  const matchedId = new Float64Array(T * d);
  const dtIgnored = new Uint8Array(T * d);
  const gtTaken = new Uint8Array(T * g);
  if (g > 0 && d > 0) {
    for (let t = 0; t < T; t++) {
      const threshold = Math.min(COCO_IOU_THRESHOLDS[t] as number, 1 - 1e-10);
      for (let di = 0; di < d; di++) {
        let best = threshold;
        let m = -1;
        for (let gi = 0; gi < g; gi++) {
          if (gtTaken[t * g + gi] === 1 && crowd[gi] === 0) continue;
          // Once matched to a regular GT, stop at the first ignored one (they are sorted last).
          if (m > -1 && ignored[m] === 0 && ignored[gi] === 1) break;
          const iou = cell.iou[di * g + (order[gi] as number)] as number;
          if (iou < best) continue;
          best = iou;
          m = gi;
        }
        if (m === -1) continue;
        dtIgnored[t * d + di] = ignored[m] as number;
        matchedId[t * d + di] = ids[m] as number;
        gtTaken[t * g + m] = 1;
      }
    }
  }
  const scores = new Float64Array(d);
  for (let di = 0; di < d; di++) {
    const index = cell.dts[di] as number;
    scores[di] = (detections[index] as CocoBoxDetection).score;
    const area = dtAreas[index] as number;
    if (area < low || area > high) {
      for (let t = 0; t < T; t++) if (matchedId[t * d + di] === 0) dtIgnored[t * d + di] = 1;
    }
  }
  let regular = 0;
  for (const flag of ignored) if (flag === 0) regular++;
  return { scores, matched: Uint8Array.from(matchedId, (id) => (id !== 0 ? 1 : 0)), ignored: dtIgnored, regular };
}

/** COCOeval.accumulate for one category, area range and maxDet: each image's first `maxDet` detections. */
function accumulate(
  evaluations: readonly ImageEvaluation[],
  maxDet: number,
  c: number,
  a: number,
  m: number,
  numCategories: number,
  precision: Float64Array,
  recall: Float64Array,
): void {
  if (evaluations.length === 0) return;
  let total = 0;
  let regular = 0;
  for (const e of evaluations) {
    total += Math.min(maxDet, e.scores.length);
    regular += e.regular;
  }
  if (regular === 0) return;
  const scores = new Float64Array(total);
  const matched = new Uint8Array(T * total);
  const ignored = new Uint8Array(T * total);
  let at = 0;
  for (const e of evaluations) {
    const all = e.scores.length;
    const d = Math.min(maxDet, all);
    scores.set(e.scores.subarray(0, d), at);
    for (let t = 0; t < T; t++) {
      matched.set(e.matched.subarray(t * all, t * all + d), t * total + at);
      ignored.set(e.ignored.subarray(t * all, t * all + d), t * total + at);
    }
    at += d;
  }
  const order = Array.from({ length: total }, (_, i) => i).sort((x, y) => (scores[y] as number) - (scores[x] as number) || x - y);
  const rc = new Float64Array(total);
  const pr = new Float64Array(total);
  const cellIndex = (c * A + a) * M + m;
  for (let t = 0; t < T; t++) {
    let tp = 0;
    let fp = 0;
    for (let i = 0; i < total; i++) {
      const j = t * total + (order[i] as number);
      if (ignored[j] === 0) {
        if (matched[j] === 1) tp++;
        else fp++;
      }
      rc[i] = tp / regular;
      pr[i] = tp / (fp + tp + FLOAT64_SPACING_1);
    }
    recall[t * numCategories * A * M + cellIndex] = total > 0 ? (rc[total - 1] as number) : 0;
    // Precision envelope: each point takes the best precision at any higher recall.
    for (let i = total - 1; i > 0; i--) if ((pr[i] as number) > (pr[i - 1] as number)) pr[i - 1] = pr[i] as number;
    // searchsorted(rc, recThrs, 'left'); thresholds past the last recall keep precision 0.
    let i = 0;
    for (let r = 0; r < R; r++) {
      const threshold = COCO_RECALL_THRESHOLDS[r] as number;
      while (i < total && (rc[i] as number) < threshold) i++;
      precision[(t * R + r) * numCategories * A * M + cellIndex] = i < total ? (pr[i] as number) : 0;
    }
  }
}

/** COCOeval.summarize's _summarizeDets: means over the cells that are not −1, in numpy's order. */
function summarize(precision: Float64Array, recall: Float64Array, numCategories: number): CocoBoxStats {
  const mean = (values: number[]): number => (values.length === 0 ? -1 : pairwiseSum(values) / values.length);
  const thresholds = (t: number | undefined): number[] => (t === undefined ? [...Array(T).keys()] : [t]);
  const ap = (a: number, m: number, t?: number): number => {
    const values: number[] = [];
    for (const ti of thresholds(t)) {
      for (let r = 0; r < R; r++) {
        for (let c = 0; c < numCategories; c++) {
          const v = precision[(ti * R + r) * numCategories * A * M + (c * A + a) * M + m] as number;
          if (v > -1) values.push(v);
        }
      }
    }
    return mean(values);
  };
  const ar = (a: number, m: number, t?: number): number => {
    const values: number[] = [];
    for (const ti of thresholds(t)) {
      for (let c = 0; c < numCategories; c++) {
        const v = recall[ti * numCategories * A * M + (c * A + a) * M + m] as number;
        if (v > -1) values.push(v);
      }
    }
    return mean(values);
  };
  const last = M - 1;
  return {
    ap: ap(0, last),
    ap50: ap(0, last, 0),
    ap75: ap(0, last, AP75_INDEX),
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
    ar75: ar(0, last, AP75_INDEX),
  };
}
