import { AppError, Code } from "@poseloop/core";
import { EarlyStopRule, JobState, SweepState, TrialState, type Sweep } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { makeTempDir, NatsServer } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTrainerHarness, type TrainerHarness } from "../testing/harness.js";
import { SWEEP_ID_LABEL, SWEEP_TRIAL_LABEL } from "./sweep-driver.js";
import { tinyExperimentYaml } from "../testing/tiny-config.js";

// Two training trainers and an API-only one on one real nats-server, real gRPC and real onnxruntime training:
// the sweep is started on the API-only trainer, which drives it until it stops; a training trainer carries on.

const EXPERIMENT = tinyExperimentYaml({ name: "sweep-tiny" });

let nats: NatsServer;
let dir: { path: string; remove: () => Promise<void> };
let a: TrainerHarness;
let b: TrainerHarness;
let api: TrainerHarness | undefined;

beforeAll(async () => {
  nats = await NatsServer.start();
  dir = await makeTempDir("poseloop-sweep-");
  const env = { POSELOOP_PYTHON: "/bin/false" };
  [a, b, api] = await Promise.all([
    startTrainerHarness(nats.url, dir.path, { ...env, POSELOOP_WORKER_ID: "sweep-a" }),
    startTrainerHarness(nats.url, dir.path, { ...env, POSELOOP_WORKER_ID: "sweep-b" }),
    startTrainerHarness(nats.url, dir.path, { ...env, POSELOOP_WORKER_ID: "sweep-api", POSELOOP_MAX_CONCURRENT_JOBS: "0" }),
  ]);
}, 60_000);

afterAll(async () => {
  await Promise.all([a?.close(), b?.close(), api?.close()]);
  await nats?.dispose();
  await dir?.remove();
});

async function failure(promise: Promise<unknown>): Promise<AppError | undefined> {
  try {
    await promise;
    return undefined;
  } catch (error) {
    return AppError.from(error);
  }
}

describe("sweeps on two trainers", () => {
  it("refuses a sweep over an unknown key, an empty range and a bad value with every problem, and queues nothing", async () => {
    const error = await failure(
      a.client.startSweep({
        experimentYaml: EXPERIMENT,
        parameters: [
          { key: "TRAIN.LR", values: ["0.001", "-0.5"] },
          { key: "TRAIN.LEARNING_RATE", values: ["0.01"] },
          { key: "DATASET.ROT_FACTOR", values: [] },
        ],
      }),
    );
    expect(AppError.is(error, Code.INVALID_ARGUMENT)).toBe(true);
    const problems = error?.problems ?? [];
    expect(problems).toContain("the sweep: DATASET.ROT_FACTOR: the range is empty (give at least one value)");
    expect(problems.filter((p) => /^trial [01] \(TRAIN\.LR=\S+, TRAIN\.LEARNING_RATE=0\.01\): .*TRAIN\.LEARNING_RATE/.test(p))).toHaveLength(2);
    expect(problems.some((p) => /^trial 1 \(TRAIN\.LR=-0\.5, TRAIN\.LEARNING_RATE=0\.01\): TRAIN\.LR /.test(p))).toBe(true);
    expect(problems.some((p) => /^trial 0 \(TRAIN\.LR=0\.001, TRAIN\.LEARNING_RATE=0\.01\): TRAIN\.LR /.test(p))).toBe(false);
    // Nothing recorded, nothing queued.
    expect((await a.client.listSweeps({})).sweeps).toEqual([]);
    expect((await a.client.listJobs({})).jobs).toEqual([]);
  });

  // A model this small learns too little in two epochs for its AP to rise above 0 (every trial ties), so no trial
  // falls below the median here: the rule's decisions are unit-tested (sweep-driver.test.ts, early-stopping.test.ts);
  // this test runs it on real validation events.
  it("runs 4 trials as jobs on both trainers with the median rule on, goes on after its driver stops, and ends with the best", async () => {
    const started = await api!.client.startSweep({
      experimentYaml: EXPERIMENT,
      parameters: [{ key: "TRAIN.LR", values: ["0.000001", "0.001", "0.003", "0.01"] }],
      earlyStopping: { rule: EarlyStopRule.MEDIAN, graceEpochs: 1, minTrials: 1 },
    });
    const sweep = started.sweep!;
    expect(sweep.state).toBe(SweepState.RUNNING);
    expect(sweep.driver).toBe("sweep-api");
    // StartSweep answers once the first stage's trials are queued: each has its job already.
    expect(sweep.trials.map((t) => t.values["TRAIN.LR"])).toEqual(["0.000001", "0.001", "0.003", "0.01"]);
    expect(sweep.trials.every((t) => t.jobId !== "" && t.state === TrialState.RUNNING)).toBe(true);

    // The driving trainer stops (as at a redeploy) while the trials run: another trainer carries the sweep on.
    await api!.close();
    api = undefined;

    const updates: Sweep[] = [];
    for await (const update of a.client.watchSweep({ sweepId: sweep.sweepId }, { signal: AbortSignal.timeout(90_000) })) updates.push(update.sweep!);
    const done = updates.at(-1)!;
    expect(SweepState[done.state]).toBe("SUCCEEDED");
    expect(["sweep-a", "sweep-b"]).toContain(done.driver);
    expect(updates.length).toBeGreaterThan(2);

    // Every trial is a normal job, labelled with its sweep, and the two trainers shared them.
    const jobs = await Promise.all(done.trials.map(async (t) => (await a.client.getJob({ jobId: t.jobId })).job!));
    expect(jobs.map((j) => j.labels[SWEEP_ID_LABEL])).toEqual(Array(4).fill(sweep.sweepId));
    expect(jobs.map((j) => j.labels[SWEEP_TRIAL_LABEL])).toEqual(["0", "1", "2", "3"]);
    [1e-6, 0.001, 0.003, 0.01].forEach((lr, i) => expect(jobs[i]?.config?.optimizer?.lr).toBeCloseTo(lr, 9));
    expect(new Set(jobs.map((j) => j.workerId))).toEqual(new Set(["sweep-a", "sweep-b"]));

    for (const [i, trial] of done.trials.entries()) {
      const job = jobs[i]!;
      expect(trial.aps.length).toBeGreaterThan(0);
      expect(trial.bestAp).toBe(Math.max(...trial.aps));
      if (trial.state === TrialState.STOPPED_EARLY) {
        expect(trial.stopReason).toMatch(/^median rule: best AP \d\.\d{3} by epoch 1 is below the median/);
        expect(JobState[job.state]).toMatch(/^(CANCELLED|SUCCEEDED)$/);
      } else {
        expect(TrialState[trial.state]).toBe("SUCCEEDED");
        expect(trial.epochs).toEqual([1, 2]);
        expect(trial.epochsRun).toBe(2);
        expect(job.bestMetrics?.ap).toBeCloseTo(trial.bestAp, 5);
      }
    }
    const best = done.trials.reduce((x, y) => (y.bestAp > x.bestAp ? y : x));
    expect(done.bestTrial).toBe(best.index);
    expect(done.fixed).toEqual(best.values);
    expect(done.finishedAt).toBeDefined();
    // GetSweep on either trainer answers the same, with a plot of AP against the swept values when asked.
    const shown = await b.client.getSweep({ sweepId: sweep.sweepId, includePlots: true });
    expect(shown.sweep?.bestTrial).toBe(best.index);
    expect(shown.plots.map((p) => p.name)).toEqual(["ap-vs-train.lr.png"]);
    expect(Buffer.from(shown.plots[0]!.png.subarray(0, 4)).toString("latin1")).toBe("\x89PNG");
  }, 120_000);
});
