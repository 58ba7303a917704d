import { readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { fakeJob, startFakeTrainer, type FakeTrainerScript } from "@poseloop/client/testing";
import { EarlyStopRule, SweepSchema, SweepSearch, SweepState, TrialState } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { makeTempDir } from "@poseloop/testkit";
import { afterEach, describe, expect, it } from "vitest";
import { captureIo } from "../testing/capture-io.js";
import { tinyExperiment } from "../testing/tiny-experiment.js";
import { runCli } from "./run-cli.js";
import { sweepChanges, sweepSummary } from "./sweep-format.js";
import { splitValues, sweepRequest } from "./sweep-request.js";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

const ID = "sweep-20261205-142000-abcdef";

/** A two-stage sweep that ended: stage lr (trial 1 stopped early), then stage batch. */
const FINISHED: MessageInitShape<typeof SweepSchema> = {
  sweepId: ID,
  name: "cli-tiny",
  state: SweepState.SUCCEEDED,
  stages: [
    { name: "lr", parameters: [{ key: "TRAIN.LR", values: ["0.001", "0.0001"] }] },
    { name: "batch", parameters: [{ key: "TRAIN.BATCH_SIZE_PER_GPU", values: ["4", "8"] }] },
  ],
  currentStage: 1,
  fixed: { "TRAIN.LR": "0.001", "TRAIN.BATCH_SIZE_PER_GPU": "4" },
  bestTrial: 2,
  trials: [
    { index: 0, stage: 0, values: { "TRAIN.LR": "0.001" }, state: TrialState.SUCCEEDED, jobId: "job-20261205-142001-000000", epochs: [1, 2], aps: [0.2, 0.3], bestAp: 0.3, bestEpoch: 2, epochsRun: 2 },
    { index: 1, stage: 0, values: { "TRAIN.LR": "0.0001" }, state: TrialState.STOPPED_EARLY, jobId: "job-20261205-142001-000001", epochs: [1], aps: [0.05], bestAp: 0.05, bestEpoch: 1, epochsRun: 1, stopReason: "median rule: best AP 0.050 by epoch 1 is below the median 0.200 of 1 other trials at that epoch" },
    { index: 2, stage: 1, values: { "TRAIN.BATCH_SIZE_PER_GPU": "4" }, fixed: { "TRAIN.LR": "0.001" }, state: TrialState.SUCCEEDED, jobId: "job-20261205-142101-000002", epochs: [1, 2], aps: [0.3, 0.4], bestAp: 0.4, bestEpoch: 2, epochsRun: 2 },
    { index: 3, stage: 1, values: { "TRAIN.BATCH_SIZE_PER_GPU": "8" }, fixed: { "TRAIN.LR": "0.001" }, state: TrialState.FAILED, jobId: "job-20261205-142101-000003", stopReason: "out of memory" },
  ],
};

async function cli(script: FakeTrainerScript, argv: string[]): Promise<{ code: number; stdout: string; stderr: string; calls: { method: string; request: unknown }[]; dir: string }> {
  const server = await startFakeTrainer(script);
  const dir = await makeTempDir("poseloop-sweep-cli-");
  cleanups.push(() => server.stop(), () => dir.remove());
  await writeFile(join(dir.path, "tiny.yaml"), tinyExperiment("tiny"));
  const io = captureIo({ env: {}, cwd: dir.path });
  const code = await runCli(["--trainer", server.address, ...argv], io);
  return { code, stdout: io.stdoutText(), stderr: io.stderrText(), calls: server.calls, dir: dir.path };
}

describe("sweepRequest", () => {
  it("turns the shorthand flags and --set into swept keys, and single --set values into overrides", () => {
    const request = sweepRequest({ flags: { lr: "1e-4,3e-4", batch: "8,16" }, sets: ["DATASET.FLIP=true,false", "TRAIN.END_EPOCH=3", "TRAIN.LR_STEP=[1,2],[2,3]"], earlyStop: "asha", eta: 2 });
    expect(request.parameters).toEqual([
      { key: "TRAIN.LR", values: ["1e-4", "3e-4"] },
      { key: "TRAIN.BATCH_SIZE_PER_GPU", values: ["8", "16"] },
      { key: "DATASET.FLIP", values: ["true", "false"] },
      { key: "TRAIN.LR_STEP", values: ["[1,2]", "[2,3]"] },
    ]);
    expect(request.overrides).toEqual({ "TRAIN.END_EPOCH": "3" });
    expect(request.earlyStopping).toEqual({ rule: EarlyStopRule.ASHA, graceEpochs: 0, reductionFactor: 2 });
    expect(request.search).toBe(SweepSearch.GRID);
  });

  it("puts the flags into their stages, and leaves a stage without flags to the trainer's defaults", () => {
    const request = sweepRequest({ flags: { lr: "0.01,0.1", "rot-factor": "0,30" }, sets: [], stages: "lr,batch,aug" });
    expect(request.parameters).toEqual([]);
    expect(request.stages).toEqual([
      { name: "lr", parameters: [{ key: "TRAIN.LR", values: ["0.01", "0.1"] }] },
      { name: "batch", parameters: [] },
      { name: "aug", parameters: [{ key: "DATASET.ROT_FACTOR", values: ["0", "30"] }] },
    ]);
  });

  it("refuses what the command line alone gets wrong", () => {
    expect(() => sweepRequest({ flags: {}, sets: [] })).toThrow(/nothing to sweep/);
    expect(() => sweepRequest({ flags: { lr: "0.1,,0.2" }, sets: [] })).toThrow(/comma-separated/);
    expect(() => sweepRequest({ flags: { lr: "0.1,abc" }, sets: [] })).toThrow(/--lr must be a number, got "abc"/);
    expect(() => sweepRequest({ flags: { lr: "0.1" }, sets: ["TRAIN.LR=1,2"] })).toThrow(/TRAIN.LR is given twice \(--lr and --set TRAIN.LR\)/);
    expect(() => sweepRequest({ flags: { lr: "0.1" }, sets: [], search: "random" })).toThrow(/needs --trials/);
    expect(() => sweepRequest({ flags: { lr: "0.1" }, sets: [], earlyStop: "hyperband" })).toThrow(/none, median or asha/);
    expect(() => sweepRequest({ flags: {}, sets: [], stages: "lr,warmup" })).toThrow(/"warmup"/);
    expect(() => sweepRequest({ flags: {}, sets: ["DATASET.FLIP=true,false"], stages: "lr" })).toThrow(/outside the stages lr/);
  });

  it("splits values at commas outside brackets", () => {
    expect(splitValues("[90, 120],[60,80], 3")).toEqual(["[90, 120]", "[60,80]", "3"]);
  });
});

describe("sweep formatting", () => {
  const sweep = create(SweepSchema, FINISHED);

  it("sorts the summary by best AP, marks the best, and says what the sweep settled on", () => {
    const lines = sweepSummary(sweep);
    expect(lines[0]).toMatch(/^ +TRIAL +STAGE +VALUES +BEST AP +AT EPOCH +EPOCHS +STATUS$/);
    expect(lines.slice(1, 5).map((l) => l.trim().split(/\s+/).slice(0, 3))).toEqual([["*", "2", "batch"], ["0", "lr", "TRAIN.LR=0.001"], ["1", "lr", "TRAIN.LR=0.0001"], ["3", "batch", "TRAIN.BATCH_SIZE_PER_GPU=8"]]);
    expect(lines[1]).toMatch(/0\.400 +2 +2 +succeeded$/);
    expect(lines[3]).toMatch(/0\.050 +1 +1 +stopped early$/);
    expect(lines.at(-1)).toBe("best: trial 2, AP 0.400 at epoch 2 (job job-20261205-142101-000002); settled on TRAIN.LR=0.001 TRAIN.BATCH_SIZE_PER_GPU=4");
  });

  it("tells what changed between two snapshots", () => {
    const before = create(SweepSchema, { ...FINISHED, state: SweepState.RUNNING, currentStage: 0, trials: (FINISHED.trials ?? []).map((t) => ({ ...t, state: TrialState.RUNNING, epochs: (t.epochs ?? []).slice(0, 1), aps: (t.aps ?? []).slice(0, 1) })) });
    const lines = sweepChanges(before, sweep);
    expect(lines).toContain("stage 2/2 (batch) starts with TRAIN.LR=0.001 TRAIN.BATCH_SIZE_PER_GPU=4");
    expect(lines).toContain("trial 0 (TRAIN.LR=0.001): epoch 2 AP 0.300");
    expect(lines).toContain("trial 1 (TRAIN.LR=0.0001) stopped early: median rule: best AP 0.050 by epoch 1 is below the median 0.200 of 1 other trials at that epoch");
    expect(lines).toContain("trial 3 (TRAIN.BATCH_SIZE_PER_GPU=8) failed: out of memory");
    expect(lines.at(-1)).toBe(`sweep ${ID} succeeded`);
  });
});

describe("poseloop sweep against a trainer", () => {
  it("sends the sweep, follows it to the end, prints the summary and saves the plots", async () => {
    const running = { ...FINISHED, state: SweepState.RUNNING, currentStage: 0, bestTrial: -1, trials: (FINISHED.trials ?? []).map((t) => ({ ...t, state: TrialState.RUNNING, epochs: [], aps: [], bestAp: 0 })) };
    const { code, stdout, stderr, calls, dir } = await cli({ sweeps: [running], sweepUpdates: { [ID]: [running, FINISHED] } }, ["sweep", "--cfg", "tiny.yaml", "--lr", "0.001,0.0001", "--stages", "lr,batch", "--early-stop", "median", "--follow", "--plot", "plots"]);
    // The fake answers without plots; the folder is made all the same.
    expect(await readdir(join(dir, "plots"))).toEqual([]);
    expect(code).toBe(0);
    const start = calls.find((c) => c.method === "startSweep")?.request as { stages: { name: string }[]; earlyStopping: { rule: number }; experimentYaml: string };
    expect(start.stages.map((s) => s.name)).toEqual(["lr", "batch"]);
    expect(start.earlyStopping.rule).toBe(EarlyStopRule.MEDIAN);
    expect(start.experimentYaml).toContain("NAME: cli-tiny");
    expect(stderr).toContain(`sweep ${ID} started: 4 trials in 2 stages (lr, batch)`);
    expect(stderr).toContain("trial 0 (TRAIN.LR=0.001): epoch 2 AP 0.300");
    expect(stdout.split("\n")[0]).toBe(`sweep ${ID} (cli-tiny): succeeded`);
    expect(stdout).toMatch(/^\* +2 +batch +TRAIN\.BATCH_SIZE_PER_GPU=4 +0\.400/m);
  });

  it("sweeps lists them; sweep show --json prints one", async () => {
    const listed = await cli({ sweeps: [FINISHED] }, ["sweeps"]);
    expect(listed.stdout).toMatch(new RegExp(`^${ID} +succeeded +cli-tiny +lr,batch +4/4 +0\\.400`, "m"));
    const shown = await cli({ sweeps: [FINISHED], jobs: [fakeJob({ jobId: "job-1" })] }, ["sweep", "show", ID, "--json"]);
    expect((JSON.parse(shown.stdout) as { sweep: { bestTrial: number } }).sweep.bestTrial).toBe(2);
  });
});
