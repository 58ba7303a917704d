import { requireAllFinite, requireFinite, requireLength } from "./argument-checks.js";
import { pairwiseSum } from "./pairwise-sum.js";

/** One person for PCK: the prediction, the ground truth and the GT box the distances are normalised by. */
export interface PckInstance {
  /** [x, y] × K, or [x, y, score] × K (COCO's result layout). */
  readonly predicted: ArrayLike<number>;
  /** [x, y, v] × K; only keypoints with v > 0 count. */
  readonly groundTruth: ArrayLike<number>;
  /** [x, y, w, h]: distances are divided by max(w, h). */
  readonly bbox: ArrayLike<number>;
}

export interface PckOptions {
  /** A keypoint is correct when its normalised distance is below this. Default 0.05, as mmpose's PCKAccuracy. */
  readonly threshold?: number;
}

export interface PckResult {
  /** Mean over keypoint types of their accuracy (types never labelled left out); 0 when none is labelled. */
  readonly pck: number;
  /** Accuracy per keypoint type, −1 where it was never labelled. */
  readonly perKeypoint: Float64Array;
  /** Keypoint types that counted. */
  readonly count: number;
}

/**
 * PCK normalised by the person box, as mmpose's PCKAccuracy with norm_item 'bbox' (keypoint_pck_accuracy):
 * per keypoint type, the share of labelled keypoints whose distance / max(box w, box h) is below the
 * threshold; then the mean over types. Persons with a zero-size box are skipped, as mmpose masks them.
 */
export function pckAccuracy(instances: readonly PckInstance[], options: PckOptions = {}): PckResult {
  const metric = new PckMetric(options);
  metric.add(instances);
  return metric.compute();
}

/** PCK fed batch by batch: it keeps per-keypoint counts, so batches add up to the same result as one call. */
export class PckMetric {
  readonly threshold: number;
  #hits: Float64Array | undefined;
  #valid: Float64Array | undefined;

  constructor(options: PckOptions = {}) {
    this.threshold = options.threshold ?? 0.05;
    requireFinite(this.threshold, "threshold");
  }

  add(instances: readonly PckInstance[]): void {
    instances.forEach((instance, i) => {
      const k = instance.groundTruth.length / 3;
      if (!Number.isInteger(k) || k === 0) throw new RangeError(`instances[${i}].groundTruth must hold [x, y, v] × K values, got ${instance.groundTruth.length}`);
      const stride = instance.predicted.length === 3 * k ? 3 : 2;
      requireLength(instance.predicted, stride * k, `instances[${i}].predicted`);
      requireAllFinite(instance.predicted, `instances[${i}].predicted`);
      requireAllFinite(instance.groundTruth, `instances[${i}].groundTruth`);
      requireLength(instance.bbox, 4, `instances[${i}].bbox`);
      requireAllFinite(instance.bbox, `instances[${i}].bbox`);
      if (this.#hits === undefined) {
        this.#hits = new Float64Array(k);
        this.#valid = new Float64Array(k);
      }
      const hits = this.#hits;
      const valid = this.#valid as Float64Array;
      if (hits.length !== k) throw new RangeError(`instances[${i}] has ${k} keypoints, earlier ones ${hits.length}`);
      const norm = Math.max(instance.bbox[2] as number, instance.bbox[3] as number);
      if (!(norm > 0)) return;
      for (let j = 0; j < k; j++) {
        if (!((instance.groundTruth[3 * j + 2] as number) > 0)) continue;
        const dx = ((instance.predicted[stride * j] as number) - (instance.groundTruth[3 * j] as number)) / norm;
        const dy = ((instance.predicted[stride * j + 1] as number) - (instance.groundTruth[3 * j + 1] as number)) / norm;
        valid[j] = (valid[j] as number) + 1;
        if (Math.sqrt(dx * dx + dy * dy) < this.threshold) hits[j] = (hits[j] as number) + 1;
      }
    });
  }

  compute(): PckResult {
    const hits = this.#hits ?? new Float64Array(0);
    const valid = this.#valid ?? new Float64Array(0);
    const perKeypoint = new Float64Array(hits.length);
    const counted: number[] = [];
    for (let j = 0; j < hits.length; j++) {
      const n = valid[j] as number;
      perKeypoint[j] = n > 0 ? (hits[j] as number) / n : -1;
      if (n > 0) counted.push(perKeypoint[j] as number);
    }
    return { pck: counted.length > 0 ? pairwiseSum(counted) / counted.length : 0, perKeypoint, count: counted.length };
  }

  reset(): void {
    this.#hits = undefined;
    this.#valid = undefined;
  }
}
