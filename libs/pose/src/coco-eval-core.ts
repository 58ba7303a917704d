import { requireFinite } from "./argument-checks.js";
import { FLOAT64_SPACING_1 } from "./oks.js";
import { pairwiseSum } from "./pairwise-sum.js";

/**
 * The machinery pycocotools' COCOeval shares between its iouTypes ('bbox' and 'keypoints' here): image and
 * category selection, evaluateImg's greedy matching over a precomputed similarity (box IoU or OKS),
 * accumulate's precision envelope at 101 recall points, and summarize's means. Only the similarity, the area
 * ranges, the maxDets and the stats list differ between coco-box-eval.ts and coco-keypoint-eval.ts.
 */

/** An image id, or an image record of COCO's `images` list. */
export type CocoImageRef = number | { readonly id: number };

/** What the shared machinery reads of a ground truth or a detection. */
export interface CocoAnnotationRef {
  readonly image_id: number;
  /** Default 1 (person). */
  readonly category_id?: number;
}

/** What the shared machinery reads of a ground truth. */
export interface CocoGroundTruthRef extends CocoAnnotationRef {
  /** Default: the position in the list plus one. A match to id 0 counts as none, as in pycocotools. */
  readonly id?: number;
  /** A crowd region: ignored, and any number of detections may match it. Default 0. */
  readonly iscrowd?: number | boolean;
}

/** What the shared machinery reads of a detection (COCO's results format). */
export interface CocoDetectionRef extends CocoAnnotationRef {
  /** The instance score that ranks detections. */
  readonly score: number;
}

export interface CocoEvalCategoryOptions {
  /** Categories to evaluate. Default: those of the ground truths, or [1] when there are none. */
  readonly categoryIds?: readonly number[];
}

// numpy's linspace: start + i·step, the last value exactly `stop` (COCOeval builds its thresholds this way,
// and a threshold one ulp off changes which recall counts).
export function linspace(start: number, stop: number, count: number): number[] {
  const step = (stop - start) / (count - 1);
  return Array.from({ length: count }, (_, i) => (i === count - 1 ? stop : i * step + start));
}

/** COCOeval's iouThrs .50:.05:.95, bit for bit (the same values for IoU and OKS). */
export const COCO_SIMILARITY_THRESHOLDS: readonly number[] = Object.freeze(linspace(0.5, 0.95, 10));
/** Recall thresholds 0:.01:1 (101 points), bit for bit as COCOeval's. */
export const COCO_RECALL_THRESHOLDS: readonly number[] = Object.freeze(linspace(0, 1, 101));

/** COCOeval's area ranges (areaRng): all, small (below 32²), medium (32² to 96²), large (above 96²). */
export const COCO_AREA_ALL: readonly [number, number] = Object.freeze([0, 1e10] as const);
export const COCO_AREA_SMALL: readonly [number, number] = Object.freeze([0, 32 ** 2] as const);
export const COCO_AREA_MEDIUM: readonly [number, number] = Object.freeze([32 ** 2, 96 ** 2] as const);
export const COCO_AREA_LARGE: readonly [number, number] = Object.freeze([96 ** 2, 1e10] as const);

const T = COCO_SIMILARITY_THRESHOLDS.length;
const R = COCO_RECALL_THRESHOLDS.length;
/** The index of .75 in COCO_SIMILARITY_THRESHOLDS. */
export const COCO_AP75_INDEX = 5;

function imageIdOf(image: CocoImageRef): number {
  return typeof image === "number" ? image : image.id;
}

function sortedUnique(values: Iterable<number>): number[] {
  return [...new Set(values)].sort((a, b) => a - b);
}

function isCrowd(annotation: { readonly iscrowd?: number | boolean }): boolean {
  return annotation.iscrowd === true || (typeof annotation.iscrowd === "number" && annotation.iscrowd !== 0);
}

/** The ground truths and detections of one image and category, prepared once for every area range. */
export interface CocoEvalCell {
  readonly gts: number[];
  /** Detections, best score first (stable), at most the per-image cap. */
  dts: number[];
  /** Similarity (IoU or OKS), detection-major: similarity[d · G + g], g in input order. */
  similarity: Float64Array;
}

/** COCOeval.evaluateImg's result, what accumulate needs of it. */
export interface CocoImageEvaluation {
  readonly scores: Float64Array;
  /** [t][d]: matched to a GT whose id is not 0 (COCOeval tests dtMatches for truth). */
  readonly matched: Uint8Array;
  /** [t][d]: dtIgnore. */
  readonly ignored: Uint8Array;
  /** GTs not ignored in this area range. */
  readonly regular: number;
}

/** Per-annotation arrays, indexed by position in the ground-truth and detection lists. */
export interface CocoEvalAnnotations {
  readonly gtIds: Float64Array;
  /** 1 where a GT is ignored in every area range (crowd, and for keypoints num_keypoints == 0). */
  readonly gtIgnore: Uint8Array;
  readonly gtCrowd: Uint8Array;
  /** The area the area ranges test. */
  readonly gtAreas: Float64Array;
  /** The detection's area as loadRes computes it. */
  readonly dtAreas: Float64Array;
  readonly dtScores: Float64Array;
}

export interface CocoEvalInput<G extends CocoGroundTruthRef, D extends CocoDetectionRef, S> {
  readonly groundTruths: readonly G[];
  readonly detections: readonly D[];
  readonly images: readonly CocoImageRef[] | undefined;
  readonly categoryIds: readonly number[] | undefined;
  /** Whether a GT is ignored in every area range besides crowd regions (keypoints: num_keypoints == 0). */
  readonly alwaysIgnored?: (gt: G) => boolean;
  /** The area the area ranges test, per GT. */
  readonly gtAreas: Float64Array;
  /** The detection's area as loadRes computes it. */
  readonly dtAreas: Float64Array;
  readonly areaRanges: readonly (readonly [number, number])[];
  /** COCOeval's maxDets, ascending; each image keeps its maxDets[-1] best detections. */
  readonly maxDets: readonly number[];
  /** The similarity of detection `dt` to ground truth `gt` (positions in the lists); `crowd`: the GT is a crowd region. */
  readonly similarity: (dt: number, gt: number, crowd: boolean) => number;
  /** COCOeval.summarize's stats list, from the means of the accumulated arrays. */
  readonly summarize: (summarizer: CocoSummarizer) => S;
}

export interface CocoEvalResult<S> {
  readonly stats: S;
  /** [T = 10][R = 101][K categories][A area ranges][M maxDets], −1 where no GT. */
  readonly precision: Float64Array;
  /** [T][K][A][M], −1 where no GT. */
  readonly recall: Float64Array;
  readonly categoryIds: readonly number[];
  /** The evaluated images, ascending. */
  readonly imageIds: readonly number[];
  /** Ground truths and detections that took part (after image and category selection and the per-image cap). */
  readonly numGroundTruths: number;
  readonly numDetections: number;
}

/**
 * COCOeval's evaluate() and accumulate(): selects images (the given ones, or every image mentioned by a GT or
 * a detection; a detection on an image outside `images` is a RangeError, as loadRes refuses it) and categories
 * (default: those of the GTs, or [1] without any), ranks each image's detections by score with ties in input
 * order (mergesort) and keeps the best maxDets[-1], then matches and accumulates per category, area range and
 * maxDet, images in ascending id.
 */
export function runCocoEval<G extends CocoGroundTruthRef, D extends CocoDetectionRef, S>(input: CocoEvalInput<G, D, S>): CocoEvalResult<S> {
  const { groundTruths, detections, images, areaRanges, maxDets, alwaysIgnored } = input;
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
  const categoryIds = sortedUnique(input.categoryIds ?? (groundTruths.length > 0 ? groundTruths.map((gt) => gt.category_id ?? 1) : [1]));

  // Cells by category, then image; GTs and detections in input order, as COCO's index keeps them.
  const cells = new Map<number, Map<number, CocoEvalCell>>(categoryIds.map((c) => [c, new Map<number, CocoEvalCell>()]));
  const cellOf = (category: number, image: number): CocoEvalCell | undefined => {
    const byImage = cells.get(category);
    if (byImage === undefined || !imageSet.has(image)) return undefined;
    let cell = byImage.get(image);
    if (cell === undefined) {
      cell = { gts: [], dts: [], similarity: new Float64Array(0) };
      byImage.set(image, cell);
    }
    return cell;
  };
  groundTruths.forEach((gt, i) => cellOf(gt.category_id ?? 1, gt.image_id)?.gts.push(i));
  detections.forEach((dt, i) => cellOf(dt.category_id ?? 1, dt.image_id)?.dts.push(i));

  const gtCrowd = Uint8Array.from(groundTruths, (gt) => (isCrowd(gt) ? 1 : 0));
  const annotations: CocoEvalAnnotations = {
    gtIds: Float64Array.from(groundTruths, (gt, i) => gt.id ?? i + 1),
    gtIgnore: Uint8Array.from(groundTruths, (gt) => (isCrowd(gt) || alwaysIgnored?.(gt) === true ? 1 : 0)),
    gtCrowd,
    gtAreas: input.gtAreas,
    dtAreas: input.dtAreas,
    dtScores: Float64Array.from(detections, (dt) => dt.score),
  };
  const { dtScores } = annotations;
  const maxDetections = maxDets[maxDets.length - 1] as number;
  let numGroundTruths = 0;
  let numDetections = 0;
  for (const byImage of cells.values()) {
    for (const cell of byImage.values()) {
      cell.dts = cell.dts
        .map((index, order) => ({ index, order, score: dtScores[index] as number }))
        .sort((a, b) => b.score - a.score || a.order - b.order)
        .slice(0, maxDetections)
        .map((entry) => entry.index);
      const g = cell.gts.length;
      const d = cell.dts.length;
      numGroundTruths += g;
      numDetections += d;
      cell.similarity = new Float64Array(d * g);
      for (let di = 0; di < d; di++) {
        for (let gi = 0; gi < g; gi++) {
          const gt = cell.gts[gi] as number;
          cell.similarity[di * g + gi] = input.similarity(cell.dts[di] as number, gt, gtCrowd[gt] === 1);
        }
      }
    }
  }

  const numCategories = categoryIds.length;
  const layout: CocoEvalLayout = { numCategories, numAreas: areaRanges.length, numMaxDets: maxDets.length };
  const precision = new Float64Array(T * R * numCategories * layout.numAreas * layout.numMaxDets).fill(-1);
  const recall = new Float64Array(T * numCategories * layout.numAreas * layout.numMaxDets).fill(-1);
  categoryIds.forEach((category, c) => {
    const byImage = cells.get(category) as Map<number, CocoEvalCell>;
    areaRanges.forEach((range, a) => {
      const evaluations: CocoImageEvaluation[] = [];
      for (const image of imageIds) {
        const cell = byImage.get(image);
        if (cell === undefined) continue;
        const evaluation = evaluateImage(cell, range, annotations);
        if (evaluation !== undefined) evaluations.push(evaluation);
      }
      maxDets.forEach((maxDet, m) => accumulate(evaluations, maxDet, c, a, m, layout, precision, recall));
    });
  });
  const stats = input.summarize(cocoSummarizer(precision, recall, layout));
  return { stats, precision, recall, categoryIds, imageIds, numGroundTruths, numDetections };
}

/** COCOeval.evaluateImg for one image, category and area range; undefined where it returns None. */
export function evaluateImage(
  cell: CocoEvalCell,
  [low, high]: readonly [number, number],
  { gtIds, gtIgnore, gtCrowd, gtAreas, dtAreas, dtScores }: CocoEvalAnnotations,
): CocoImageEvaluation | undefined {
  const g = cell.gts.length;
  const d = cell.dts.length;
  if (g === 0 && d === 0) return undefined;
  // GTs ignored here are sorted last (stable), as COCOeval's mergesort on _ignore.
  const flags = cell.gts.map((index) => {
    const area = gtAreas[index] as number;
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
      const threshold = Math.min(COCO_SIMILARITY_THRESHOLDS[t] as number, 1 - 1e-10);
      for (let di = 0; di < d; di++) {
        let best = threshold;
        let m = -1;
        for (let gi = 0; gi < g; gi++) {
          // A taken GT matches again only if it is a crowd region.
          if (gtTaken[t * g + gi] === 1 && crowd[gi] === 0) continue;
          // Once matched to a regular GT, stop at the first ignored one (they are sorted last).
          if (m > -1 && ignored[m] === 0 && ignored[gi] === 1) break;
          const similarity = cell.similarity[di * g + (order[gi] as number)] as number;
          if (similarity < best) continue;
          best = similarity;
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
    scores[di] = dtScores[index] as number;
    // Unmatched detections outside the area range are ignored.
    const area = dtAreas[index] as number;
    if (area < low || area > high) {
      for (let t = 0; t < T; t++) if (matchedId[t * d + di] === 0) dtIgnored[t * d + di] = 1;
    }
  }
  let regular = 0;
  for (const flag of ignored) if (flag === 0) regular++;
  return { scores, matched: Uint8Array.from(matchedId, (id) => (id !== 0 ? 1 : 0)), ignored: dtIgnored, regular };
}

/** The K × A × M cells of COCOeval's precision and recall arrays. */
export interface CocoEvalLayout {
  readonly numCategories: number;
  readonly numAreas: number;
  readonly numMaxDets: number;
}

/**
 * COCOeval.accumulate for one category, area range and maxDet: each image's first `maxDet` detections,
 * precision into [T][R][K][A][M] and recall into [T][K][A][M].
 */
export function accumulate(
  evaluations: readonly CocoImageEvaluation[],
  maxDet: number,
  c: number,
  a: number,
  m: number,
  { numCategories, numAreas, numMaxDets }: CocoEvalLayout,
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
  // Over the dataset, by score with ties in image order (mergesort).
  const order = Array.from({ length: total }, (_, i) => i).sort((x, y) => (scores[y] as number) - (scores[x] as number) || x - y);
  const rc = new Float64Array(total);
  const pr = new Float64Array(total);
  const cells = numCategories * numAreas * numMaxDets;
  const cellIndex = (c * numAreas + a) * numMaxDets + m;
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
    recall[t * cells + cellIndex] = total > 0 ? (rc[total - 1] as number) : 0;
    // Precision envelope: each point takes the best precision at any higher recall.
    for (let i = total - 1; i > 0; i--) if ((pr[i] as number) > (pr[i - 1] as number)) pr[i - 1] = pr[i] as number;
    // searchsorted(rc, recThrs, 'left'); thresholds past the last recall keep precision 0.
    let i = 0;
    for (let r = 0; r < R; r++) {
      const threshold = COCO_RECALL_THRESHOLDS[r] as number;
      while (i < total && (rc[i] as number) < threshold) i++;
      precision[(t * R + r) * cells + cellIndex] = i < total ? (pr[i] as number) : 0;
    }
  }
}

/** COCOeval.summarize's _summarize: the mean AP or AR of one area range and maxDet, at every IoU threshold or one. */
export interface CocoSummarizer {
  readonly ap: (a: number, m: number, t?: number) => number;
  readonly ar: (a: number, m: number, t?: number) => number;
}

/** COCOeval.summarize's _summarize: means over the cells that are not −1, in numpy's order. */
export function cocoSummarizer(
  precision: Float64Array,
  recall: Float64Array,
  { numCategories, numAreas, numMaxDets }: CocoEvalLayout,
): CocoSummarizer {
  const cells = numCategories * numAreas * numMaxDets;
  const mean = (values: number[]): number => (values.length === 0 ? -1 : pairwiseSum(values) / values.length);
  const thresholds = (t: number | undefined): number[] => (t === undefined ? [...Array(T).keys()] : [t]);
  return {
    ap: (a, m, t) => {
      const values: number[] = [];
      for (const ti of thresholds(t)) {
        for (let r = 0; r < R; r++) {
          for (let c = 0; c < numCategories; c++) {
            const v = precision[(ti * R + r) * cells + (c * numAreas + a) * numMaxDets + m] as number;
            if (v > -1) values.push(v);
          }
        }
      }
      return mean(values);
    },
    ar: (a, m, t) => {
      const values: number[] = [];
      for (const ti of thresholds(t)) {
        for (let c = 0; c < numCategories; c++) {
          const v = recall[ti * cells + (c * numAreas + a) * numMaxDets + m] as number;
          if (v > -1) values.push(v);
        }
      }
      return mean(values);
    },
  };
}
