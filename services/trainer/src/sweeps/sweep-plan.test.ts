import { create } from "@bufbuild/protobuf";
import { StartSweepRequestSchema, SweepSearch } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { describe, expect, it } from "vitest";
import { defaultStageParameters, expandStage, MAX_SWEEP_TRIALS, planStages } from "./sweep-plan.js";

const base = { lr: 0.001, batchSize: 8 };

describe("expandStage", () => {
  const stage = {
    name: "s",
    parameters: [
      { key: "TRAIN.LR", values: ["0.0001", "0.001"] },
      { key: "TRAIN.BATCH_SIZE_PER_GPU", values: ["4", "8", "16"] },
    ],
  };

  it("grid: every combination, the last key varying fastest", () => {
    const trials = expandStage(stage, SweepSearch.GRID, 0, 0n, 0);
    expect(trials).toHaveLength(6);
    expect(trials[0]).toEqual({ "TRAIN.LR": "0.0001", "TRAIN.BATCH_SIZE_PER_GPU": "4" });
    expect(trials[1]).toEqual({ "TRAIN.LR": "0.0001", "TRAIN.BATCH_SIZE_PER_GPU": "8" });
    expect(trials[5]).toEqual({ "TRAIN.LR": "0.001", "TRAIN.BATCH_SIZE_PER_GPU": "16" });
    expect(new Set(trials.map((t) => JSON.stringify(t))).size).toBe(6);
  });

  it("random: the asked number of distinct combinations, the same for the same seed, others for another", () => {
    const a = expandStage(stage, SweepSearch.RANDOM, 3, 42n, 0);
    expect(a).toHaveLength(3);
    expect(new Set(a.map((t) => JSON.stringify(t))).size).toBe(3);
    expect(expandStage(stage, SweepSearch.RANDOM, 3, 42n, 0)).toEqual(a);
    const seen = new Set([0n, 1n, 2n, 3n, 4n, 5n].map((seed) => JSON.stringify(expandStage(stage, SweepSearch.RANDOM, 3, seed, 0))));
    expect(seen.size).toBeGreaterThan(1);
    const grid = expandStage(stage, SweepSearch.GRID, 0, 0n, 0).map((t) => JSON.stringify(t));
    for (const trial of a) expect(grid).toContain(JSON.stringify(trial));
  });
});

describe("defaultStageParameters", () => {
  it("brackets the experiment's LR and batch size, and names the augmentation keys", () => {
    expect(defaultStageParameters("lr", base)).toEqual([{ key: "TRAIN.LR", values: ["0.0003", "0.001", "0.003"] }]);
    expect(defaultStageParameters("batch", base)).toEqual([{ key: "TRAIN.BATCH_SIZE_PER_GPU", values: ["4", "8", "16"] }]);
    expect(defaultStageParameters("batch", { lr: 1, batchSize: 1 })).toEqual([{ key: "TRAIN.BATCH_SIZE_PER_GPU", values: ["1", "2"] }]);
    expect(defaultStageParameters("aug", base)?.map((p) => p.key)).toEqual(["DATASET.ROT_FACTOR", "DATASET.SCALE_FACTOR"]);
    expect(defaultStageParameters("warmup", base)).toBeUndefined();
  });
});

describe("planStages", () => {
  it("a plain sweep is one stage of the request's parameters", () => {
    const { stages, problems } = planStages(create(StartSweepRequestSchema, { parameters: [{ key: "TRAIN.LR", values: ["0.001", "0.01"] }] }), base);
    expect(problems).toEqual([]);
    expect(stages).toEqual([{ name: "sweep", parameters: [{ key: "TRAIN.LR", values: ["0.001", "0.01"] }] }]);
  });

  it("stages in the guide's order, defaults where a stage names no values", () => {
    const request = create(StartSweepRequestSchema, { stages: [{ name: "lr", parameters: [{ key: "TRAIN.LR", values: ["0.01"] }] }, { name: "batch" }, { name: "aug" }] });
    const { stages, problems } = planStages(request, base);
    expect(problems).toEqual([]);
    expect(stages.map((s) => s.name)).toEqual(["lr", "batch", "aug"]);
    expect(stages[0]?.parameters[0]?.values).toEqual(["0.01"]);
    expect(stages[1]?.parameters[0]?.values).toEqual(["4", "8", "16"]);
  });

  it("lists every problem of the sweep's shape at once", () => {
    const request = create(StartSweepRequestSchema, {
      stages: [
        { name: "lr", parameters: [{ key: "TRAIN.LR", values: [] }] },
        { name: "warmup" },
        { name: "again", parameters: [{ key: "TRAIN.LR", values: ["1", "1"] }, { key: "DATASET.FLIP", values: ["true"] }] },
      ],
      parameters: [{ key: "TRAIN.SEED", values: ["1"] }],
      overrides: { "DATASET.FLIP": "false" },
      search: SweepSearch.RANDOM,
    });
    const { problems } = planStages(request, base);
    expect(problems).toEqual([
      "parameters: give the swept keys in the stages, not both",
      "stage 1 (lr): TRAIN.LR: the range is empty (give at least one value)",
      "stage 2 (warmup): has no parameters, and only the stages lr, batch, aug have defaults",
      "stage 3 (again): TRAIN.LR: a value is given twice",
      "stage 3 (again): TRAIN.LR is already swept by stage 1 (lr)",
      "stage 3 (again): DATASET.FLIP is swept and also fixed by an override",
      "trials: random search needs a number of trials per stage",
    ]);
  });

  it("refuses a sweep without parameters, too many random trials, and more trials than the limit", () => {
    expect(planStages(create(StartSweepRequestSchema, {}), base).problems).toEqual(["the sweep has no parameters: name at least one key and its values"]);
    const random = create(StartSweepRequestSchema, { parameters: [{ key: "TRAIN.LR", values: ["1", "2"] }], search: SweepSearch.RANDOM, trials: 3 });
    expect(planStages(random, base).problems).toEqual(["trials: 3 exceeds the 2 combinations of stage 1"]);
    const values = Array.from({ length: 9 }, (_, i) => String(i + 1));
    const huge = create(StartSweepRequestSchema, { parameters: [{ key: "TRAIN.LR", values }, { key: "TRAIN.SEED", values }] });
    expect(planStages(huge, base).problems).toEqual([`the sweep has 81 trials; the limit is ${MAX_SWEEP_TRIALS}`]);
  });
});
