import { requireAllFinite, requireFinite, requireLength, requireNonNegative, requirePositiveInteger } from "./argument-checks.js";
import { COCO17 } from "./keypoint-schema.js";
import { cocoOks, FLOAT64_SPACING_1, oksVariances } from "./oks.js";
import { pairwiseSum } from "./pairwise-sum.js";

/** A ground-truth person as COCO's annotation file stores it (only the fields keypoint evaluation reads). */
export interface CocoKeypointGroundTruth {
  /** Default: the position in the list plus one. Ids must be unique; 0 behaves as in pycocotools (see evaluateKeypoints). */
  readonly id?: number;
  readonly image_id: number;
  /** Default 1 (person). */
  readonly category_id?: number;
  /** [x, y, v] × K; v > 0 marks a labelled keypoint. */
  readonly keypoints: ArrayLike<number>;
  /** 0 makes the person ignored, whatever its keypoints say (as COCOeval). */
  readonly num_keypoints: number;
  /** Segment area in pixels²: the OKS scale and the area-range filter. */
  readonly area: number;
  /** [x, y, w, h]; used for OKS when no keypoint is labelled. */
  readonly bbox: ArrayLike<number>;
  /** A crowd region: ignored, and any number of detections may match it. Default 0. */
  readonly iscrowd?: number | boolean;
}

/** A detection in COCO's results format. */
export interface CocoKeypointDetection {
  readonly image_id: number;
  /** Default 1 (person). */
  readonly category_id?: number;
  /** [x, y, score] × K in image pixels. */
  readonly keypoints: ArrayLike<number>;
  /** The instance score that ranks detections. */
  readonly score: number;
}

/** An image id, or an image record of COCO's `images` list. */
export type CocoImageRef = number | { readonly id: number };

export interface CocoKeypointEvalOptions {
  /** Per-keypoint OKS sigmas; their count is K. Default: COCO-17's. */
  readonly sigmas?: readonly number[];
  /** Detections kept per image, the highest scoring. Default 20 (COCOeval's keypoint maxDets). */
  readonly maxDetections?: number;
  /** Categories to evaluate. Default: those of the ground truths, or [1] when there are none. */
  readonly categoryIds?: readonly number[];
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

export interface CocoKeypointEvaluation {
  readonly stats: CocoKeypointStats;
  /** COCOeval's eval['precision'] without the maxDets axis: [T = 10][R = 101][K categories][A = 3 area ranges], −1 where no GT. */
  readonly precision: Float64Array;
  /** COCOeval's eval['recall']: [T][K][A], −1 where no GT. */
  readonly recall: Float64Array;
  readonly categoryIds: readonly number[];
  /** The evaluated images, ascending. */
  readonly imageIds: readonly number[];
  /** Ground truths and detections that took part (after image and category selection and the per-image cap). */
  readonly numGroundTruths: number;
  readonly numDetections: number;
}

// numpy's linspace: start + i·step, the last value exactly `stop` (COCOeval builds its thresholds this way,
// and a threshold one ulp off changes which recall counts).
function linspace(start: number, stop: number, count: number): number[] {
  const step = (stop - start) / (count - 1);
  return Array.from({ length: count }, (_, i) => (i === count - 1 ? stop : i * step + start));
}

/** OKS thresholds .50:.05:.95, bit for bit as COCOeval's. */
export const COCO_OKS_THRESHOLDS: readonly number[] = Object.freeze(linspace(0.5, 0.95, 10));
/** Recall thresholds 0:.01:1 (101 points), bit for bit as COCOeval's. */
export const COCO_RECALL_THRESHOLDS: readonly number[] = Object.freeze(linspace(0, 1, 101));
/** COCOeval's keypoint area ranges: all, medium (32² to 96²), large (above 96²). */
export const COCO_KEYPOINT_AREA_RANGES: readonly (readonly [number, number])[] = Object.freeze([
  Object.freeze([0, 1e10] as const),
  Object.freeze([32 ** 2, 96 ** 2] as const),
  Object.freeze([96 ** 2, 1e10] as const),
]);

const T = COCO_OKS_THRESHOLDS.length;
const R = COCO_RECALL_THRESHOLDS.length;
const A = COCO_KEYPOINT_AREA_RANGES.length;
const AP75_INDEX = 5;

/** The ground truths and detections of one image and category, prepared once for the three area ranges. */
interface Cell {
  readonly gts: number[];
  /** Detections, best score first (stable), at most maxDetections. */
  dts: number[];
  /** OKS, detection-major: oks[d · G + g], g in input order. */
  oks: Float64Array;
}

/** COCOeval.evaluateImg's result, what accumulate needs of it. */
interface ImageEvaluation {
  readonly scores: Float64Array;
  /** [t][d]: matched to a GT whose id is not 0 (COCOeval tests dtMatches for truth). */
  readonly matched: Uint8Array;
  /** [t][d]: dtIgnore. */
  readonly ignored: Uint8Array;
  /** GTs not ignored in this area range. */
  readonly regular: number;
}

function imageIdOf(image: CocoImageRef): number {
  return typeof image === "number" ? image : image.id;
}

function sortedUnique(values: Iterable<number>): number[] {
  return [...new Set(values)].sort((a, b) => a - b);
}

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

  const imageIds = sortedUnique(
    images !== undefined ? images.map(imageIdOf) : [...groundTruths.map((gt) => gt.image_id), ...detections.map((dt) => dt.image_id)],
  );
  for (const id of imageIds) requireFinite(id, "image id");
  const imageSet = new Set(imageIds);
  if (images !== undefined) {
    for (const dt of detections) {
      if (!imageSet.has(dt.image_id)) throw new RangeError(`detection on image ${dt.image_id}, which is not among the evaluated images`);
    }
  }
  const categoryIds = sortedUnique(options.categoryIds ?? (groundTruths.length > 0 ? groundTruths.map((gt) => gt.category_id ?? 1) : [1]));

  // Cells by category, then image; GTs and detections in input order, as COCO's index keeps them.
  const cells = new Map<number, Map<number, Cell>>(categoryIds.map((c) => [c, new Map<number, Cell>()]));
  const cellOf = (category: number, image: number): Cell | undefined => {
    const byImage = cells.get(category);
    if (byImage === undefined || !imageSet.has(image)) return undefined;
    let cell = byImage.get(image);
    if (cell === undefined) {
      cell = { gts: [], dts: [], oks: new Float64Array(0) };
      byImage.set(image, cell);
    }
    return cell;
  };
  groundTruths.forEach((gt, i) => cellOf(gt.category_id ?? 1, gt.image_id)?.gts.push(i));
  detections.forEach((dt, i) => cellOf(dt.category_id ?? 1, dt.image_id)?.dts.push(i));

  const gtIds = Float64Array.from(groundTruths, (gt, i) => gt.id ?? i + 1);
  const gtIgnore = Uint8Array.from(groundTruths, (gt) => (isCrowd(gt) || gt.num_keypoints === 0 ? 1 : 0));
  const gtCrowd = Uint8Array.from(groundTruths, (gt) => (isCrowd(gt) ? 1 : 0));
  const dtAreas = Float64Array.from(detections, (dt) => keypointExtentArea(dt.keypoints, k));
  const variances = oksVariances(sigmas);
  const scratch = new Float64Array(k);

  let numGroundTruths = 0;
  let numDetections = 0;
  for (const byImage of cells.values()) {
    for (const cell of byImage.values()) {
      cell.dts = cell.dts
        .map((index, order) => ({ index, order, score: (detections[index] as CocoKeypointDetection).score }))
        .sort((a, b) => b.score - a.score || a.order - b.order)
        .slice(0, maxDetections)
        .map((entry) => entry.index);
      const g = cell.gts.length;
      const d = cell.dts.length;
      numGroundTruths += g;
      numDetections += d;
      cell.oks = new Float64Array(d * g);
      for (let di = 0; di < d; di++) {
        const dt = detections[cell.dts[di] as number] as CocoKeypointDetection;
        for (let gi = 0; gi < g; gi++) {
          const gt = groundTruths[cell.gts[gi] as number] as CocoKeypointGroundTruth;
          cell.oks[di * g + gi] = cocoOks(dt.keypoints, 0, gt.keypoints, gt.area, gt.bbox, variances, scratch);
        }
      }
    }
  }

  const numCategories = categoryIds.length;
  const precision = new Float64Array(T * R * numCategories * A).fill(-1);
  const recall = new Float64Array(T * numCategories * A).fill(-1);
  categoryIds.forEach((category, c) => {
    const byImage = cells.get(category) as Map<number, Cell>;
    for (let a = 0; a < A; a++) {
      const range = COCO_KEYPOINT_AREA_RANGES[a] as readonly [number, number];
      const evaluations: ImageEvaluation[] = [];
      for (const image of imageIds) {
        const cell = byImage.get(image);
        if (cell === undefined) continue;
        const evaluation = evaluateImage(cell, range, groundTruths, gtIds, gtIgnore, gtCrowd, dtAreas, detections);
        if (evaluation !== undefined) evaluations.push(evaluation);
      }
      accumulate(evaluations, c, a, numCategories, precision, recall);
    }
  });

  return {
    stats: summarize(precision, recall, numCategories),
    precision,
    recall,
    categoryIds,
    imageIds,
    numGroundTruths,
    numDetections,
  };
}

function isCrowd(gt: CocoKeypointGroundTruth): boolean {
  return gt.iscrowd === true || (typeof gt.iscrowd === "number" && gt.iscrowd !== 0);
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

/** COCOeval.evaluateImg for one image, category and area range; undefined where it returns None. */
function evaluateImage(
  cell: Cell,
  [low, high]: readonly [number, number],
  groundTruths: readonly CocoKeypointGroundTruth[],
  gtIds: Float64Array,
  gtIgnore: Uint8Array,
  gtCrowd: Uint8Array,
  dtAreas: Float64Array,
  detections: readonly CocoKeypointDetection[],
): ImageEvaluation | undefined {
  const g = cell.gts.length;
  const d = cell.dts.length;
  if (g === 0 && d === 0) return undefined;
  // GTs ignored here first get sorted last (stable), as COCOeval's mergesort on _ignore.
  const flags = cell.gts.map((index) => {
    const area = (groundTruths[index] as CocoKeypointGroundTruth).area;
    return gtIgnore[index] === 1 || area < low || area > high ? 1 : 0;
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
      const threshold = Math.min(COCO_OKS_THRESHOLDS[t] as number, 1 - 1e-10);
      for (let di = 0; di < d; di++) {
        let best = threshold;
        let m = -1;
        for (let gi = 0; gi < g; gi++) {
          if (gtTaken[t * g + gi] === 1 && crowd[gi] === 0) continue;
          // Once matched to a regular GT, stop at the first ignored one (they are sorted last).
          if (m > -1 && ignored[m] === 0 && ignored[gi] === 1) break;
          const oks = cell.oks[di * g + (order[gi] as number)] as number;
          if (oks < best) continue;
          best = oks;
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
    scores[di] = (detections[index] as CocoKeypointDetection).score;
    const area = dtAreas[index] as number;
    if (area < low || area > high) {
      for (let t = 0; t < T; t++) if (matchedId[t * d + di] === 0) dtIgnored[t * d + di] = 1;
    }
  }
  let regular = 0;
  for (const flag of ignored) if (flag === 0) regular++;
  return { scores, matched: Uint8Array.from(matchedId, (id) => (id !== 0 ? 1 : 0)), ignored: dtIgnored, regular };
}

/** COCOeval.accumulate for one category and area range (maxDets has one value, already applied). */
function accumulate(
  evaluations: readonly ImageEvaluation[],
  c: number,
  a: number,
  numCategories: number,
  precision: Float64Array,
  recall: Float64Array,
): void {
  if (evaluations.length === 0) return;
  let total = 0;
  let regular = 0;
  for (const e of evaluations) {
    total += e.scores.length;
    regular += e.regular;
  }
  if (regular === 0) return;
  const scores = new Float64Array(total);
  const matched = new Uint8Array(T * total);
  const ignored = new Uint8Array(T * total);
  let at = 0;
  for (const e of evaluations) {
    const d = e.scores.length;
    scores.set(e.scores, at);
    for (let t = 0; t < T; t++) {
      matched.set(e.matched.subarray(t * d, (t + 1) * d), t * total + at);
      ignored.set(e.ignored.subarray(t * d, (t + 1) * d), t * total + at);
    }
    at += d;
  }
  const order = Array.from({ length: total }, (_, i) => i).sort((x, y) => (scores[y] as number) - (scores[x] as number) || x - y);
  const rc = new Float64Array(total);
  const pr = new Float64Array(total);
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
    recall[(t * numCategories + c) * A + a] = total > 0 ? (rc[total - 1] as number) : 0;
    // Precision envelope: each point takes the best precision at any higher recall.
    for (let i = total - 1; i > 0; i--) if ((pr[i] as number) > (pr[i - 1] as number)) pr[i - 1] = pr[i] as number;
    // searchsorted(rc, recThrs, 'left'); thresholds past the last recall keep precision 0.
    let i = 0;
    for (let r = 0; r < R; r++) {
      const threshold = COCO_RECALL_THRESHOLDS[r] as number;
      while (i < total && (rc[i] as number) < threshold) i++;
      precision[((t * R + r) * numCategories + c) * A + a] = i < total ? (pr[i] as number) : 0;
    }
  }
}

/** COCOeval.summarize's _summarizeKps: means over the cells that are not −1, in numpy's order. */
function summarize(precision: Float64Array, recall: Float64Array, numCategories: number): CocoKeypointStats {
  const mean = (values: number[]): number => (values.length === 0 ? -1 : pairwiseSum(values) / values.length);
  const ap = (a: number, t?: number): number => {
    const values: number[] = [];
    for (let ti = t ?? 0; ti < (t === undefined ? T : t + 1); ti++) {
      for (let r = 0; r < R; r++) {
        for (let c = 0; c < numCategories; c++) {
          const v = precision[((ti * R + r) * numCategories + c) * A + a] as number;
          if (v > -1) values.push(v);
        }
      }
    }
    return mean(values);
  };
  const ar = (a: number, t?: number): number => {
    const values: number[] = [];
    for (let ti = t ?? 0; ti < (t === undefined ? T : t + 1); ti++) {
      for (let c = 0; c < numCategories; c++) {
        const v = recall[(ti * numCategories + c) * A + a] as number;
        if (v > -1) values.push(v);
      }
    }
    return mean(values);
  };
  return {
    ap: ap(0),
    ap50: ap(0, 0),
    ap75: ap(0, AP75_INDEX),
    apMedium: ap(1),
    apLarge: ap(2),
    ar: ar(0),
    ar50: ar(0, 0),
    ar75: ar(0, AP75_INDEX),
    arMedium: ar(1),
    arLarge: ar(2),
  };
}
