import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { toBinary } from "@bufbuild/protobuf";
import { TrainConfigSchema } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { describe, expect, it } from "vitest";
import { ExperimentChecker } from "./experiment-checker.js";
import { prepareExperiment } from "./experiment.js";

const DEMO = fileURLToPath(new URL("../../../../experiments/synthetic/lite_128x96_demo.yaml", import.meta.url));

describe("ExperimentChecker", () => {
  it("gives what prepareExperiment gives, from a worker thread", async () => {
    const yaml = await readFile(DEMO, "utf8");
    const overrides = { "TRAIN.END_EPOCH": "4" };
    const inWorker = await new ExperimentChecker().prepare(yaml, { overrides });
    const here = await prepareExperiment(yaml, { overrides });
    expect(inWorker.problems).toEqual([]);
    expect(toBinary(TrainConfigSchema, inWorker.config!)).toEqual(toBinary(TrainConfigSchema, here.config!));
    const bad = await new ExperimentChecker().prepare(yaml, { overrides: { "TRAIN.LRR": "1" } });
    expect(bad.problems).toEqual((await prepareExperiment(yaml, { overrides: { "TRAIN.LRR": "1" } })).problems);
  }, 60_000);

  it("stops a check that runs past its deadline and says which limit it hit", async () => {
    const yaml = await readFile(DEMO, "utf8");
    const { config, problems } = await new ExperimentChecker({ deadlineMs: 1 }).prepare(`${yaml}\nCUDNN:\n${Array.from({ length: 5000 }, (_, i) => `  K${i}: ${i}`).join("\n")}\n`);
    expect(config).toBeUndefined();
    expect(problems).toEqual(["the experiment file took longer than 0.001 s to check (the limit on checking time)"]);
  }, 60_000);
});
