import { create } from "@bufbuild/protobuf";
import { StartSweepRequestSchema } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { describe, expect, it } from "vitest";
import { checkSweep } from "./sweep-check.js";
import { tinyExperimentYaml } from "../testing/tiny-config.js";

const EXPERIMENT = tinyExperimentYaml({ name: "sweep-check" });

describe("checkSweep", () => {
  it("plans the trials of every stage, defaults from the experiment's own values", () => {
    const checked = checkSweep(create(StartSweepRequestSchema, { experimentYaml: EXPERIMENT, stages: [{ name: "lr" }, { name: "batch", parameters: [{ key: "TRAIN.BATCH_SIZE_PER_GPU", values: ["4", "16"] }] }] }));
    expect(checked.problems).toEqual([]);
    expect(checked.trials).toEqual([
      { stage: 0, values: { "TRAIN.LR": "0.0003" } },
      { stage: 0, values: { "TRAIN.LR": "0.001" } },
      { stage: 0, values: { "TRAIN.LR": "0.003" } },
      { stage: 1, values: { "TRAIN.BATCH_SIZE_PER_GPU": "4" } },
      { stage: 1, values: { "TRAIN.BATCH_SIZE_PER_GPU": "16" } },
    ]);
  });

  it("builds every trial's experiment and lists each problem with the trial's index and values", () => {
    const checked = checkSweep(
      create(StartSweepRequestSchema, {
        experimentYaml: EXPERIMENT,
        parameters: [
          { key: "TRAIN.LR", values: ["0.001", "-1"] },
          { key: "TRAIN.LR_TYPO", values: ["3"] },
          { key: "DATASET.ROT_FACTOR", values: [] },
        ],
      }),
    );
    const problems = checked.problems;
    expect(problems[0]).toBe("the sweep: DATASET.ROT_FACTOR: the range is empty (give at least one value)");
    // Both trials name the unknown key; the second also has the negative learning rate.
    expect(problems.filter((p) => p.startsWith("trial 0 (TRAIN.LR=0.001, TRAIN.LR_TYPO=3)") && p.includes("TRAIN.LR_TYPO"))).toHaveLength(1);
    expect(problems.some((p) => p.startsWith("trial 1 (TRAIN.LR=-1, TRAIN.LR_TYPO=3)") && p.includes("TRAIN.LR_TYPO"))).toBe(true);
    expect(problems.some((p) => p.startsWith("trial 1 (TRAIN.LR=-1") && /TRAIN\.LR\b(?!_)/.test(p.slice(p.indexOf("):"))))).toBe(true);
    expect(problems.some((p) => p.startsWith("trial 0") && /TRAIN\.LR\b(?!_)/.test(p.slice(p.indexOf("):"))))).toBe(false);
  });

  it("reports a broken experiment once, not once per trial, and a trial's own bad value besides", () => {
    const checked = checkSweep(create(StartSweepRequestSchema, { experimentYaml: EXPERIMENT.replace("OPTIMIZER: adam", "OPTIMIZER: lion"), parameters: [{ key: "TRAIN.LR", values: ["0.001", "0.01", "-1"] }] }));
    expect(checked.problems).toHaveLength(2);
    expect(checked.problems[0]).toMatch(/^experiment: .*OPTIMIZER/);
    expect(checked.problems[1]).toMatch(/^trial 2 \(TRAIN\.LR=-1\): TRAIN\.LR /);
  });
});
