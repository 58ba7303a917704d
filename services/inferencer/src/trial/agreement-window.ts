import type { MessageInitShape } from "@bufbuild/protobuf";
import type { PersonEstimate } from "@poseloop/estimator";
import { keypointOks } from "@poseloop/pose";
import type { AgreementStatsSchema } from "@poseloop/proto/poseloop/registry/v1/registry_pb";

/** The bounds of a canary or shadow policy that a window of frames is measured against. */
export interface TrialBounds {
  /** Frames (both models run, at least one answered) before a verdict. */
  readonly windowFrames: number;
  readonly minMeanOks: number;
  /** Of the candidate; frames the serving model failed too are the frame's fault and are not counted. */
  readonly maxFailureRate: number;
  /** Candidate p95 over serving p95; 0: not bounded. */
  readonly maxLatencyRatio: number;
}

/** One model's run of a frame. */
export interface ModelRun {
  readonly ok: boolean;
  readonly persons: readonly PersonEstimate[];
  /**
   * The model's own time on the frame in the worker (decode, crops, session, decoding), without queueing: the
   * copy of a frame waits behind live batches, so time in the queue would charge the model for the load.
   */
  readonly latencyMs: number;
}

export interface TrialSample {
  readonly serving: ModelRun;
  readonly candidate: ModelRun;
}

export type TrialDecision = { readonly promote: boolean; readonly reason: string };

/** How two models' people in one frame agree: means over the people both found (the same person box). */
export interface FrameAgreement {
  readonly people: number;
  readonly meanOks: number;
  /** Each keypoint's OKS term, averaged over the people. */
  readonly keypointOks: Float64Array;
  /** Mean |candidate score − serving score| over every keypoint of those people. */
  readonly confidenceGap: number;
}

/**
 * COCO OKS of the candidate's keypoints against the serving model's, per person box both returned (people are
 * cropped from the same boxes, so the box pairs them; one cut by max_persons on one side only is skipped).
 * Every serving keypoint counts as labelled: the reference is a full prediction, not an annotation, and a
 * candidate that moves a joint the serving model was unsure of still disagrees (the score gap measures the
 * confidence side). The area is the person box's (the scale both models cropped at): COCO uses the segment
 * area, about half a box, so this is slightly more tolerant than COCO's OKS on the same offsets. A candidate
 * keypoint that is not finite scores 0; a person whose serving keypoints are not finite is skipped.
 * Undefined when no person pairs up.
 */
export function frameAgreement(serving: readonly PersonEstimate[], candidate: readonly PersonEstimate[], sigmas: readonly number[]): FrameAgreement | undefined {
  const k = sigmas.length;
  const keypointSums = new Float64Array(k);
  const reference = new Float64Array(3 * k);
  const single = new Float64Array(3 * k);
  const used = new Set<number>();
  let people = 0;
  let oksSum = 0;
  let gapSum = 0;
  for (const s of serving) {
    const index = candidate.findIndex((c, i) => !used.has(i) && sameBox(c.bbox, s.bbox));
    const c = candidate[index];
    if (c === undefined || s.keypoints.length !== 3 * k || c.keypoints.length !== 3 * k || !s.keypoints.every(Number.isFinite)) continue;
    used.add(index);
    people++;
    const area = s.bbox.width * s.bbox.height;
    for (let j = 0; j < k; j++) {
      reference[3 * j] = s.keypoints[3 * j] as number;
      reference[3 * j + 1] = s.keypoints[3 * j + 1] as number;
      reference[3 * j + 2] = 2;
      single[3 * j] = reference[3 * j] as number;
      single[3 * j + 1] = reference[3 * j + 1] as number;
      gapSum += Math.abs(finiteOr(c.keypoints[3 * j + 2], 0) - (s.keypoints[3 * j + 2] as number));
    }
    if (!c.keypoints.every(Number.isFinite)) continue;
    oksSum += keypointOks(c.keypoints, { keypoints: reference, area }, sigmas);
    // A keypoint's own term is the OKS over a reference in which only that keypoint is labelled.
    for (let j = 0; j < k; j++) {
      single[3 * j + 2] = 2;
      keypointSums[j] = (keypointSums[j] as number) + keypointOks(c.keypoints, { keypoints: single, area }, sigmas);
      single[3 * j + 2] = 0;
    }
  }
  if (people === 0) return undefined;
  return { people, meanOks: oksSum / people, keypointOks: keypointSums.map((sum) => sum / people), confidenceGap: gapSum / (people * k) };
}

function sameBox(a: PersonEstimate["bbox"], b: PersonEstimate["bbox"]): boolean {
  return a.x === b.x && a.y === b.y && a.width === b.width && a.height === b.height;
}

function finiteOr(value: number | undefined, fallback: number): number {
  return value !== undefined && Number.isFinite(value) ? value : fallback;
}

/** The nearest-rank p-quantile of `values` (0 when empty). */
export function quantile(values: readonly number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))] as number;
}

/**
 * Agreement of a candidate with the serving model over a window of frames both ran, and the verdict it
 * supports. A frame both models failed is the frame's fault (an image that does not decode) and does not
 * count; every other frame does, a failure of either model included. Frame OKS is the mean over the frame's
 * people, and the window's mean OKS the mean over frames both answered, so a frame with many people weighs as
 * much as a frame with one.
 *
 * The verdict comes as soon as the window can no longer pass (the candidate failed more frames than the
 * window allows, or its mean OKS stays below the bound even if every remaining frame agreed perfectly), or
 * when `windowFrames` frames are in: every bound met → promote, otherwise roll back naming each bound missed.
 */
export class AgreementWindow {
  readonly #bounds: TrialBounds;
  readonly #sigmas: readonly number[];
  #frames = 0;
  #answeredByBoth = 0;
  #candidateFailures = 0;
  #servingFailures = 0;
  #oksSum = 0;
  readonly #keypointSums: Float64Array;
  #gapSum = 0;
  readonly #candidateMs: number[] = [];
  readonly #servingMs: number[] = [];

  constructor(bounds: TrialBounds, sigmas: readonly number[]) {
    this.#bounds = bounds;
    this.#sigmas = sigmas;
    this.#keypointSums = new Float64Array(sigmas.length);
  }

  /** Frames counted so far (at most the window). */
  get frames(): number {
    return this.#frames;
  }

  /** Mean OKS over the frames both models answered so far (0 before any). */
  get meanOks(): number {
    return this.#answeredByBoth === 0 ? 0 : this.#oksSum / this.#answeredByBoth;
  }

  /** Counts a frame; false when it does not count (both failed, or the window is full). */
  add(sample: TrialSample): boolean {
    if (this.#frames >= this.#bounds.windowFrames) return false;
    const { serving, candidate } = sample;
    if (!serving.ok && !candidate.ok) return false;
    this.#frames++;
    if (!candidate.ok) this.#candidateFailures++;
    else this.#candidateMs.push(candidate.latencyMs);
    if (!serving.ok) this.#servingFailures++;
    else this.#servingMs.push(serving.latencyMs);
    if (serving.ok && candidate.ok) {
      const agreement = frameAgreement(serving.persons, candidate.persons, this.#sigmas);
      if (agreement !== undefined) {
        this.#answeredByBoth++;
        this.#oksSum += agreement.meanOks;
        this.#gapSum += agreement.confidenceGap;
        agreement.keypointOks.forEach((oks, j) => (this.#keypointSums[j] = (this.#keypointSums[j] as number) + oks));
      }
    }
    return true;
  }

  /** The verdict the frames so far support, or undefined while the window is open and can still pass. */
  decision(): TrialDecision | undefined {
    const { windowFrames, minMeanOks, maxFailureRate, maxLatencyRatio } = this.#bounds;
    const failureBound = `max_failure_rate ${maxFailureRate}`;
    if (this.#candidateFailures / windowFrames > maxFailureRate) {
      return { promote: false, reason: `the candidate failed ${this.#candidateFailures} of ${this.#frames} frames, more than ${failureBound} allows in a window of ${windowFrames}` };
    }
    const remaining = windowFrames - this.#frames;
    const bestMeanOks = this.#answeredByBoth + remaining === 0 ? 0 : (this.#oksSum + remaining) / (this.#answeredByBoth + remaining);
    if (bestMeanOks < minMeanOks) {
      return { promote: false, reason: `mean OKS against the serving model ${fixed(this.meanOks)} over ${this.#answeredByBoth} frames cannot reach min_mean_oks ${minMeanOks} within the window of ${windowFrames}` };
    }
    if (remaining > 0) return undefined;
    const missed: string[] = [];
    if (this.meanOks < minMeanOks) missed.push(`mean OKS ${fixed(this.meanOks)} is below min_mean_oks ${minMeanOks}`);
    const candidateP95 = quantile(this.#candidateMs, 0.95);
    const servingP95 = quantile(this.#servingMs, 0.95);
    if (maxLatencyRatio > 0 && servingP95 > 0 && candidateP95 / servingP95 > maxLatencyRatio) {
      missed.push(`p95 latency ${fixed(candidateP95)} ms is ${fixed(candidateP95 / servingP95)}x the serving model's ${fixed(servingP95)} ms, above max_latency_ratio ${maxLatencyRatio}`);
    }
    if (missed.length > 0) return { promote: false, reason: missed.join("; ") };
    return {
      promote: true,
      reason: `mean OKS ${fixed(this.meanOks)} ≥ ${minMeanOks} over ${this.#answeredByBoth} frames, ${this.#candidateFailures} of ${windowFrames} frames failed (${failureBound}), p95 ${fixed(candidateP95)} ms against ${fixed(servingP95)} ms`,
    };
  }

  /** The window's agreement, as a PromotionDecision carries it. */
  stats(): MessageInitShape<typeof AgreementStatsSchema> {
    const frames = this.#frames;
    const both = this.#answeredByBoth;
    return {
      frames: BigInt(both),
      meanOks: this.meanOks,
      keypointOks: Array.from(this.#keypointSums, (sum) => (both === 0 ? 0 : sum / both)),
      meanConfidenceGap: both === 0 ? 0 : this.#gapSum / both,
      candidateFailureRate: frames === 0 ? 0 : this.#candidateFailures / frames,
      servingFailureRate: frames === 0 ? 0 : this.#servingFailures / frames,
      candidateP95Ms: quantile(this.#candidateMs, 0.95),
      servingP95Ms: quantile(this.#servingMs, 0.95),
    };
  }
}

function fixed(value: number): string {
  return value.toFixed(3).replace(/\.?0+$/, "");
}
