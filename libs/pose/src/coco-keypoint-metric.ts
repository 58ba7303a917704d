import { requireFinite } from "./argument-checks.js";
import {
  evaluateKeypoints,
  type CocoImageRef,
  type CocoKeypointDetection,
  type CocoKeypointEvalOptions,
  type CocoKeypointEvaluation,
  type CocoKeypointGroundTruth,
} from "./coco-keypoint-eval.js";
import { oksNms } from "./oks-nms.js";

export interface CocoKeypointMetricOptions extends CocoKeypointEvalOptions {
  /** Images to evaluate, ids or COCO image records. Default: every image a GT or a detection mentions. */
  readonly images?: readonly CocoImageRef[];
  /**
   * OKS-NMS per image before evaluating, at this threshold (HRNet and mmpose use 0.9 when people come from a
   * detector). Default: none. A detection's `area` (e.g. its crop's) is the NMS scale, else its keypoints' box.
   */
  readonly oksNmsThreshold?: number;
}

/** A detection fed to the metric; `area` is the OKS-NMS scale. */
export interface CocoKeypointMetricDetection extends CocoKeypointDetection {
  readonly area?: number;
}

interface StoredDetection {
  readonly image_id: number;
  readonly category_id: number;
  readonly keypoints: Float64Array;
  readonly score: number;
  readonly area: number | undefined;
}

/**
 * COCO keypoint AP over a validation run, fed batch by batch (mmpose's stateful metric around pure
 * functions): detections are copied in as they come, since the trainer reuses its buffers, and
 * `compute()` runs `evaluateKeypoints` over everything seen. COCO AP ranks detections across the whole
 * dataset, so nothing can be summed per batch.
 */
export class CocoKeypointMetric {
  readonly #options: CocoKeypointMetricOptions;
  readonly #groundTruths: CocoKeypointGroundTruth[] = [];
  #detections: StoredDetection[] = [];

  constructor(groundTruths: readonly CocoKeypointGroundTruth[] = [], options: CocoKeypointMetricOptions = {}) {
    if (options.oksNmsThreshold !== undefined) requireFinite(options.oksNmsThreshold, "oksNmsThreshold");
    this.#options = options;
    this.addGroundTruths(groundTruths);
  }

  /** Ground truths are usually given once for the dataset; they survive `reset()`. */
  addGroundTruths(groundTruths: readonly CocoKeypointGroundTruth[]): void {
    for (const gt of groundTruths) this.#groundTruths.push(gt);
  }

  addDetections(detections: readonly CocoKeypointMetricDetection[]): void {
    for (const dt of detections) {
      this.#detections.push({
        image_id: dt.image_id,
        category_id: dt.category_id ?? 1,
        keypoints: Float64Array.from(dt.keypoints),
        score: dt.score,
        area: dt.area,
      });
    }
  }

  get numDetections(): number {
    return this.#detections.length;
  }

  get numGroundTruths(): number {
    return this.#groundTruths.length;
  }

  compute(): CocoKeypointEvaluation {
    const { images, oksNmsThreshold, ...evalOptions } = this.#options;
    const detections = oksNmsThreshold === undefined ? this.#detections : this.#suppressed(oksNmsThreshold);
    return evaluateKeypoints(this.#groundTruths, detections, images, evalOptions);
  }

  /** Forgets the detections (a new validation run); keeps the ground truths. */
  reset(): void {
    this.#detections = [];
  }

  #suppressed(threshold: number): StoredDetection[] {
    const groups = new Map<string, StoredDetection[]>();
    for (const dt of this.#detections) {
      const key = `${dt.image_id}/${dt.category_id}`;
      const group = groups.get(key);
      if (group === undefined) groups.set(key, [dt]);
      else group.push(dt);
    }
    const kept: StoredDetection[] = [];
    const nmsOptions = this.#options.sigmas === undefined ? {} : { sigmas: this.#options.sigmas };
    for (const group of groups.values()) {
      const candidates = group.map((dt) => ({ keypoints: dt.keypoints, score: dt.score, area: dt.area ?? keypointBoxArea(dt.keypoints) }));
      // Survivors keep their input order, which breaks score ties in the evaluation.
      for (const index of oksNms(candidates, threshold, nmsOptions).sort((a, b) => a - b)) kept.push(group[index] as StoredDetection);
    }
    return kept;
  }
}

function keypointBoxArea(keypoints: Float64Array): number {
  let x0 = Infinity;
  let x1 = -Infinity;
  let y0 = Infinity;
  let y1 = -Infinity;
  for (let i = 0; i + 2 < keypoints.length; i += 3) {
    const x = keypoints[i] as number;
    const y = keypoints[i + 1] as number;
    x0 = Math.min(x0, x);
    x1 = Math.max(x1, x);
    y0 = Math.min(y0, y);
    y1 = Math.max(y1, y);
  }
  return Number.isFinite(x0) ? (x1 - x0) * (y1 - y0) : 0;
}
