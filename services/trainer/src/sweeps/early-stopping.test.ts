import { create } from "@bufbuild/protobuf";
import { EarlyStoppingSchema, EarlyStopRule } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { describe, expect, it } from "vitest";
import { ashaRungs, resolveStopping, stopDecision, type TrialCurve } from "./early-stopping.js";

const curve = (index: number, aps: number[]): TrialCurve => ({ index, epochs: aps.map((_, i) => i + 1), aps });
const rule = (init: Parameters<typeof create<typeof EarlyStoppingSchema>>[1]) => resolveStopping(create(EarlyStoppingSchema, init)).rule;

describe("the median stopping rule", () => {
  const median = rule({ rule: EarlyStopRule.MEDIAN, graceEpochs: 2, minTrials: 2 });

  it("stops a trial whose best AP by epoch e is below the median of the others' at e", () => {
    const others = [curve(0, [0.2, 0.4, 0.5]), curve(1, [0.1, 0.3]), curve(2, [0.3, 0.5])];
    const reason = stopDecision(median, curve(3, [0.1, 0.2]), 2, others, 10);
    expect(reason).toMatch(/^median rule: best AP 0\.200 by epoch 2 is below the median 0\.400 of 3 other trials/);
  });

  it("keeps a trial at or above the median, inside the grace period, at its last epoch, or without enough others", () => {
    const others = [curve(0, [0.2, 0.4]), curve(1, [0.1, 0.3]), curve(2, [0.3, 0.5])];
    expect(stopDecision(median, curve(3, [0.1, 0.45]), 2, others, 10)).toBeUndefined();
    expect(stopDecision(median, curve(3, [0.0]), 1, others, 10)).toBeUndefined();
    expect(stopDecision(median, curve(3, [0.0, 0.0]), 2, others, 2)).toBeUndefined();
    expect(stopDecision(median, curve(3, [0.0, 0.0]), 2, [curve(0, [0.5, 0.5])], 10)).toBeUndefined();
    // Others that have not reached epoch 2 do not count.
    expect(stopDecision(median, curve(3, [0.0, 0.0]), 2, [curve(0, [0.5]), curve(1, [0.5])], 10)).toBeUndefined();
  });

  it("judges by the best AP so far, not the last", () => {
    const others = [curve(0, [0.2, 0.3]), curve(1, [0.2, 0.3])];
    expect(stopDecision(median, curve(2, [0.4, 0.1]), 2, others, 10)).toBeUndefined();
  });
});

describe("ASHA", () => {
  const asha = rule({ rule: EarlyStopRule.ASHA, minEpochs: 1, reductionFactor: 2 });

  it("puts rungs at r, rη, rη², ... before the end", () => {
    expect(ashaRungs(asha, 10)).toEqual([1, 2, 4, 8]);
    expect(ashaRungs(rule({ rule: EarlyStopRule.ASHA }), 10)).toEqual([1, 3, 9]);
  });

  it("keeps the top 1/η at a rung and stops the rest; lets the first ones through", () => {
    expect(stopDecision(asha, curve(0, [0.1]), 1, [], 4)).toBeUndefined();
    expect(stopDecision(asha, curve(1, [0.1]), 1, [curve(0, [0.3])], 4)).toMatch(/^ASHA: AP 0\.100 at rung epoch 1 is outside the top 1 of 2 \(cutoff 0\.300, η=2\)$/);
    expect(stopDecision(asha, curve(1, [0.5]), 1, [curve(0, [0.3])], 4)).toBeUndefined();
    // Not a rung: no decision.
    expect(stopDecision(asha, curve(1, [0.5, 0.0, 0.0]), 3, [curve(0, [0.3, 0.9, 0.9])], 8)).toBeUndefined();
  });
});

describe("resolveStopping", () => {
  it("applies the defaults and refuses a reduction factor below 2", () => {
    expect(resolveStopping(undefined).rule).toEqual({ rule: "none", graceEpochs: 1, minTrials: 2, minEpochs: 1, reductionFactor: 3 });
    expect(resolveStopping(create(EarlyStoppingSchema, { rule: EarlyStopRule.ASHA, reductionFactor: 1 })).problems).toEqual(["early_stopping.reduction_factor: 1 must be at least 2"]);
  });
});
