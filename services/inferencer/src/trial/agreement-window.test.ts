import type { PersonEstimate } from "@poseloop/estimator";
import { describe, expect, it } from "vitest";
import { AgreementWindow, frameAgreement, quantile, type ModelRun, type TrialBounds } from "./agreement-window.js";

// Two keypoints, so every OKS term below is worked out by hand: term = exp(−d² / (2σ)² / area / 2).
const SIGMAS = [0.1, 0.2];
const BOX = { x: 0, y: 0, width: 100, height: 100 };

function person(keypoints: number[], box = BOX): PersonEstimate {
  return { bbox: box, score: 1, keypoints: Float32Array.from(keypoints) };
}

const SERVING = person([50, 50, 0.9, 60, 60, 0.8]);
// Keypoint 0 is 10 px off: exp(−100 / 0.04 / 10000 / 2) = exp(−0.125); keypoint 1 is exact.
const CLOSE = person([60, 50, 0.7, 60, 60, 0.8]);
const TERM_10PX = Math.exp(-0.125);
// Both keypoints far off (300 px): every term is ~0.
const FAR = person([350, 50, 0.1, 360, 60, 0.1]);

function run(persons: PersonEstimate[], latencyMs = 5, ok = true): ModelRun {
  return { ok, persons, latencyMs };
}

const FAILED: ModelRun = { ok: false, persons: [], latencyMs: 0 };

function bounds(overrides: Partial<TrialBounds> = {}): TrialBounds {
  return { windowFrames: 4, minMeanOks: 0.9, maxFailureRate: 0.25, maxLatencyRatio: 0, ...overrides };
}

describe("frameAgreement", () => {
  it("is COCO OKS of the candidate against the serving keypoints, per keypoint, with the score gap", () => {
    const agreement = frameAgreement([SERVING], [CLOSE], SIGMAS);
    expect(agreement?.people).toBe(1);
    expect(agreement?.keypointOks[0]).toBeCloseTo(TERM_10PX, 12);
    expect(agreement?.keypointOks[1]).toBeCloseTo(1, 12);
    expect(agreement?.meanOks).toBeCloseTo((TERM_10PX + 1) / 2, 12);
    // |0.7 − 0.9| and |0.8 − 0.8|, over two keypoints (float32 scores).
    expect(agreement?.confidenceGap).toBeCloseTo(0.1, 6);
  });

  it("uses the person box's area and the keypoint's sigma", () => {
    // Keypoint 1 (σ 0.2) off by (30, 40) in a 50x50 box: exp(−2500 / 0.16 / 2500 / 2) = exp(−3.125).
    const small = { x: 10, y: 10, width: 50, height: 50 };
    const agreement = frameAgreement([person([20, 20, 1, 30, 30, 1], small)], [person([20, 20, 1, 60, 70, 1], small)], SIGMAS);
    expect(agreement?.keypointOks[0]).toBeCloseTo(1, 12);
    expect(agreement?.keypointOks[1]).toBeCloseTo(Math.exp(-3.125), 12);
  });

  it("pairs people by their box whatever the order, and skips a person only one side returned", () => {
    const other = { x: 200, y: 0, width: 100, height: 100 };
    const servingPeople = [SERVING, person([250, 50, 1, 260, 60, 1], other)];
    const candidatePeople = [person([250, 50, 1, 260, 60, 1], other), CLOSE, person([0, 0, 1, 0, 0, 1], { x: 500, y: 0, width: 10, height: 10 })];
    const agreement = frameAgreement(servingPeople, candidatePeople, SIGMAS);
    expect(agreement?.people).toBe(2);
    expect(agreement?.meanOks).toBeCloseTo(((TERM_10PX + 1) / 2 + 1) / 2, 12);
    expect(frameAgreement([SERVING], [person([1, 1, 1, 1, 1, 1], other)], SIGMAS)).toBeUndefined();
  });

  it("scores a candidate with non-finite keypoints 0", () => {
    expect(frameAgreement([SERVING], [person([Number.NaN, 50, 0.5, 60, 60, 0.8])], SIGMAS)?.meanOks).toBe(0);
  });
});

describe("quantile", () => {
  it("is the nearest rank", () => {
    expect(quantile(Array.from({ length: 20 }, (_, i) => 20 - i), 0.95)).toBe(19);
    expect(quantile([7], 0.95)).toBe(7);
    expect(quantile([], 0.95)).toBe(0);
  });
});

describe("AgreementWindow", () => {
  it("promotes once the window is full and every bound is met, with the stats a decision carries", () => {
    const window = new AgreementWindow(bounds(), SIGMAS);
    for (let i = 0; i < 3; i++) {
      expect(window.add({ serving: run([SERVING], 10), candidate: run([CLOSE], 12) })).toBe(true);
      expect(window.decision()).toBeUndefined();
    }
    window.add({ serving: run([SERVING], 10), candidate: run([CLOSE], 12) });
    const decision = window.decision();
    expect(decision?.promote, decision?.reason).toBe(true);
    const stats = window.stats();
    expect(stats.frames).toBe(4n);
    expect(stats.meanOks).toBeCloseTo((TERM_10PX + 1) / 2, 12);
    expect(stats.keypointOks?.[0]).toBeCloseTo(TERM_10PX, 12);
    expect(stats.keypointOks?.[1]).toBeCloseTo(1, 12);
    expect(stats.meanConfidenceGap).toBeCloseTo(0.1, 6);
    expect(stats.candidateFailureRate).toBe(0);
    expect(stats.candidateP95Ms).toBe(12);
    expect(stats.servingP95Ms).toBe(10);
    // A full window takes no more frames.
    expect(window.add({ serving: run([SERVING]), candidate: run([FAR]) })).toBe(false);
  });

  it("rolls back at the end of the window when the mean OKS is below the bound", () => {
    const window = new AgreementWindow(bounds({ minMeanOks: 0.95 }), SIGMAS);
    for (let i = 0; i < 4; i++) window.add({ serving: run([SERVING]), candidate: run([CLOSE]) });
    const decision = window.decision();
    expect(decision?.promote).toBe(false);
    expect(decision?.reason).toMatch(/min_mean_oks 0\.95/);
  });

  it("rolls back as soon as the mean OKS cannot reach the bound, even if every remaining frame agreed", () => {
    // Window 10, bound 0.8: after n frames at OKS ~0 the best mean is (10 − n) / 10, below 0.8 from n = 3.
    const window = new AgreementWindow(bounds({ windowFrames: 10, minMeanOks: 0.8 }), SIGMAS);
    window.add({ serving: run([SERVING]), candidate: run([FAR]) });
    window.add({ serving: run([SERVING]), candidate: run([FAR]) });
    expect(window.decision()).toBeUndefined();
    window.add({ serving: run([SERVING]), candidate: run([FAR]) });
    expect(window.decision()?.promote).toBe(false);
    expect(window.decision()?.reason).toMatch(/cannot reach min_mean_oks 0\.8/);
    expect(window.stats().frames).toBe(3n);
  });

  it("rolls back as soon as the candidate failed more frames than the window allows; frames both failed do not count", () => {
    // Window 10 at max_failure_rate 0.1: one failure may pass, the second cannot.
    const window = new AgreementWindow(bounds({ windowFrames: 10, maxFailureRate: 0.1, minMeanOks: 0.5 }), SIGMAS);
    expect(window.add({ serving: FAILED, candidate: FAILED })).toBe(false);
    window.add({ serving: run([SERVING]), candidate: FAILED });
    expect(window.decision()).toBeUndefined();
    window.add({ serving: run([SERVING]), candidate: run([SERVING]) });
    window.add({ serving: run([SERVING]), candidate: FAILED });
    const decision = window.decision();
    expect(decision?.promote).toBe(false);
    expect(decision?.reason).toMatch(/failed 2 of 3 frames, more than max_failure_rate 0\.1/);
    const stats = window.stats();
    expect(stats.candidateFailureRate).toBeCloseTo(2 / 3, 12);
    expect(stats.servingFailureRate).toBe(0);
    expect(stats.frames).toBe(1n);
  });

  it("does not hold the serving model's failures against the candidate", () => {
    const window = new AgreementWindow(bounds({ maxFailureRate: 0 }), SIGMAS);
    window.add({ serving: FAILED, candidate: run([CLOSE]) });
    for (let i = 0; i < 3; i++) window.add({ serving: run([SERVING]), candidate: run([CLOSE]) });
    expect(window.decision()?.promote).toBe(true);
    expect(window.stats().servingFailureRate).toBe(0.25);
  });

  it("rolls back a candidate whose p95 latency is above max_latency_ratio times the serving model's", () => {
    const window = new AgreementWindow(bounds({ maxLatencyRatio: 2 }), SIGMAS);
    for (let i = 0; i < 4; i++) window.add({ serving: run([SERVING], 10), candidate: run([SERVING], 30) });
    const decision = window.decision();
    expect(decision?.promote).toBe(false);
    expect(decision?.reason).toMatch(/p95 latency 30 ms is 3x the serving model's 10 ms, above max_latency_ratio 2/);
    // Unbounded (0), the same window passes.
    const unbounded = new AgreementWindow(bounds(), SIGMAS);
    for (let i = 0; i < 4; i++) unbounded.add({ serving: run([SERVING], 10), candidate: run([SERVING], 30) });
    expect(unbounded.decision()?.promote).toBe(true);
  });
});
