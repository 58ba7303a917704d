import { describe, expect, it } from "vitest";
import { learningRate, scheduleProblems } from "./lr-schedule.js";

describe("learning-rate schedules", () => {
  it("multistep: the HRNet recipe (1e-3, ×0.1 at epochs 170 and 200)", () => {
    const config = { kind: "multistep", lr: 1e-3, steps: [170, 200], factor: 0.1 } as const;
    expect(learningRate(config, 0, 0, 210)).toBeCloseTo(1e-3, 12);
    expect(learningRate(config, 169, 10_000, 210)).toBeCloseTo(1e-3, 12);
    expect(learningRate(config, 170, 10_001, 210)).toBeCloseTo(1e-4, 12);
    expect(learningRate(config, 209, 12_000, 210)).toBeCloseTo(1e-5, 12);
  });

  it("cosine from lr to the floor over the run", () => {
    const config = { kind: "cosine", lr: 1e-3, minLr: 1e-5 } as const;
    expect(learningRate(config, 0, 0, 100)).toBeCloseTo(1e-3, 12);
    expect(learningRate(config, 50, 0, 100)).toBeCloseTo((1e-3 + 1e-5) / 2, 12);
    expect(learningRate(config, 100, 0, 100)).toBeCloseTo(1e-5, 12);
  });

  it("linear warm-up over the first steps, then the schedule", () => {
    const config = { kind: "constant", lr: 1e-3, warmupSteps: 500, warmupStartFactor: 0.001 } as const;
    expect(learningRate(config, 0, 0, 10)).toBeCloseTo(1e-6, 12);
    expect(learningRate(config, 0, 250, 10)).toBeCloseTo(1e-3 * (0.001 + 0.999 * 0.5), 12);
    expect(learningRate(config, 1, 500, 10)).toBeCloseTo(1e-3, 12);
  });

  it("names every problem of an invalid schedule", () => {
    expect(scheduleProblems({ kind: "multistep", lr: -1, steps: [90, 90, 120], factor: 2, warmupSteps: -5 })).toHaveLength(4);
  });
});
