import { create } from "@bufbuild/protobuf";
import { EmbeddedBus } from "@poseloop/bus";
import { silentLogger } from "@poseloop/core";
import {
  CancelSweepRequestSchema,
  EarlyStopRule,
  JobEventSchema,
  JobSchema,
  JobState,
  StartSweepRequestSchema,
  SweepState,
  TrialState,
  type Job,
  type JobEvent,
  type StartSweepRequest,
} from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { makeTempDir } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SweepDriver, type TrialJobs } from "./sweep-driver.js";
import { sweepHandlers } from "./sweep-service.js";
import { SweepStore } from "./sweep-store.js";
import { tinyExperimentYaml } from "../testing/tiny-config.js";

// The driver's logic against a real key-value bucket (the embedded bus) and jobs that a test moves by hand.

const EXPERIMENT = tinyExperimentYaml({ name: "driver", endEpoch: 3 });

/** Jobs in memory: `start` records the trial's config, a test appends validations and ends jobs. */
class HandJobs implements TrialJobs {
  readonly jobs = new Map<string, { job: Job; events: JobEvent[] }>();
  readonly cancelled: string[] = [];
  readonly started: { trial: number; lr: number; batch: number }[] = [];

  async start(sweep: Parameters<TrialJobs["start"]>[0], trial: Parameters<TrialJobs["start"]>[1], config: Parameters<TrialJobs["start"]>[2]): Promise<Job> {
    const jobId = `job-${sweep.sweepId.slice(6)}-t${trial.index}`;
    if (!this.jobs.has(jobId)) {
      this.jobs.set(jobId, { job: create(JobSchema, { jobId, state: JobState.RUNNING, config }), events: [] });
      this.started.push({ trial: trial.index, lr: config.optimizer?.lr ?? 0, batch: config.batchSize });
    }
    return this.jobs.get(jobId)!.job;
  }

  async cancel(_sweep: unknown, jobId: string): Promise<void> {
    this.cancelled.push(jobId);
    const entry = this.jobs.get(jobId);
    if (entry !== undefined) entry.job.state = JobState.CANCELLED;
  }

  async get(jobId: string): Promise<Job | undefined> {
    return this.jobs.get(jobId)?.job;
  }

  async events(jobId: string, after: bigint): Promise<JobEvent[]> {
    return (this.jobs.get(jobId)?.events ?? []).filter((e) => e.sequence > after);
  }

  validate(jobId: string, epoch: number, ap: number): void {
    const entry = this.jobs.get(jobId)!;
    entry.events.push(create(JobEventSchema, { jobId, sequence: BigInt(entry.events.length + 1), event: { case: "validation", value: { epoch, metrics: { ap } } } }));
  }

  finish(jobId: string, state = JobState.SUCCEEDED): void {
    this.jobs.get(jobId)!.job.state = state;
  }
}

let dir: { path: string; remove: () => Promise<void> };
let store: SweepStore;

beforeAll(async () => {
  dir = await makeTempDir("poseloop-sweep-driver-");
  store = await SweepStore.open(await EmbeddedBus.open(dir.path));
});
afterAll(async () => dir?.remove());

function setup(workerId = "driver-a", leaseMs = 10_000) {
  const jobs = new HandJobs();
  const driver = new SweepDriver({ store, workerId, logger: silentLogger, leaseMs });
  driver.attach(jobs);
  const handlers = sweepHandlers({ store, driver, jobs, dataRoot: dir.path, logger: silentLogger });
  return { jobs, driver, handlers };
}

const request = (init: Parameters<typeof create<typeof StartSweepRequestSchema>>[1]): StartSweepRequest => create(StartSweepRequestSchema, { experimentYaml: EXPERIMENT, ...init });

describe("SweepDriver", () => {
  it("runs the stages in order, each with the best values of the ones before fixed", async () => {
    const { jobs, driver, handlers } = setup();
    const { sweep } = await handlers.start(request({ stages: [{ name: "lr", parameters: [{ key: "TRAIN.LR", values: ["0.001", "0.01"] }] }, { name: "batch" }] }), "token:me", []);
    // The first stage is queued before StartSweep answers; the second waits.
    expect(jobs.started).toEqual([
      { trial: 0, lr: 0.001, batch: 8 },
      { trial: 1, lr: 0.01, batch: 8 },
    ]);
    expect(sweep.trials.map((t) => TrialState[t.state])).toEqual(["RUNNING", "RUNNING", "PENDING", "PENDING", "PENDING"]);
    const [t0, t1] = sweep.trials.map((t) => t.jobId);
    jobs.validate(t0!, 1, 0.2);
    jobs.validate(t1!, 1, 0.4);
    jobs.finish(t0!);
    await driver.drive(sweep.sweepId);
    // One trial of the stage still runs: the next stage has not started.
    expect(jobs.started).toHaveLength(2);
    jobs.finish(t1!);
    await driver.drive(sweep.sweepId);
    const second = await store.require(sweep.sweepId);
    expect(second.currentStage).toBe(1);
    expect(second.fixed).toEqual({ "TRAIN.LR": "0.01" });
    // Batch defaults from the experiment's 8, each with the first stage's best learning rate.
    expect(jobs.started.slice(2)).toEqual([
      { trial: 2, lr: 0.01, batch: 4 },
      { trial: 3, lr: 0.01, batch: 8 },
      { trial: 4, lr: 0.01, batch: 16 },
    ]);
    expect(second.trials[2]?.fixed).toEqual({ "TRAIN.LR": "0.01" });
    for (const [i, trial] of second.trials.slice(2).entries()) {
      jobs.validate(trial.jobId, 1, 0.1 * (i + 1));
      jobs.finish(trial.jobId, i === 0 ? JobState.FAILED : JobState.SUCCEEDED);
    }
    await driver.drive(sweep.sweepId);
    const done = await store.require(sweep.sweepId);
    expect(SweepState[done.state]).toBe("SUCCEEDED");
    expect(done.bestTrial).toBe(1);
    expect(done.fixed).toEqual({ "TRAIN.LR": "0.01", "TRAIN.BATCH_SIZE_PER_GPU": "16" });
    expect(done.trials.map((t) => TrialState[t.state])).toEqual(["SUCCEEDED", "SUCCEEDED", "FAILED", "SUCCEEDED", "SUCCEEDED"]);
    expect(done.trials[4]).toMatchObject({ epochs: [1], bestEpoch: 1, epochsRun: 1 });
    expect(done.trials[4]?.bestAp).toBeCloseTo(0.3, 6);
  });

  it("stops a trial below the median by cancelling its job, and records why", async () => {
    const { jobs, driver, handlers } = setup();
    const { sweep } = await handlers.start(request({ parameters: [{ key: "TRAIN.LR", values: ["0.001", "0.002", "0.003"] }], earlyStopping: { rule: EarlyStopRule.MEDIAN, minTrials: 2 } }), "", []);
    const ids = sweep.trials.map((t) => t.jobId);
    jobs.validate(ids[0]!, 1, 0.5);
    jobs.validate(ids[1]!, 1, 0.3);
    jobs.validate(ids[2]!, 1, 0.1);
    await driver.drive(sweep.sweepId);
    const after = await store.require(sweep.sweepId);
    expect(jobs.cancelled).toEqual([ids[2]]);
    expect(TrialState[after.trials[2]!.state]).toBe("STOPPED_EARLY");
    expect(after.trials[2]?.stopReason).toBe("median rule: best AP 0.100 by epoch 1 is below the median 0.400 of 2 other trials at that epoch");
    // Stopped, not failed: the stage ends when the other two do, and the stopped trial's AP still counts.
    jobs.finish(ids[0]!);
    jobs.finish(ids[1]!);
    await driver.drive(sweep.sweepId);
    const done = await store.require(sweep.sweepId);
    expect(SweepState[done.state]).toBe("SUCCEEDED");
    expect(TrialState[done.trials[2]!.state]).toBe("STOPPED_EARLY");
    expect(done.bestTrial).toBe(0);
  });

  it("leaves a sweep to the trainer holding its lease; another takes it over once the lease is given back", async () => {
    const a = setup("driver-a");
    const b = setup("driver-b");
    // B sees A's jobs: the bus's job records are shared.
    const shared = a.jobs;
    b.driver.attach(shared);
    const { sweep } = await a.handlers.start(request({ parameters: [{ key: "TRAIN.LR", values: ["0.001", "0.01"] }] }), "", []);
    shared.validate(sweep.trials[0]!.jobId, 1, 0.3);
    await b.driver.drive(sweep.sweepId);
    expect((await store.require(sweep.sweepId)).trials[0]?.aps).toEqual([]);
    // A stops: its run loop gives its leases back.
    const stopping = new AbortController();
    const running = a.driver.run(stopping.signal);
    stopping.abort();
    await running;
    await b.driver.drive(sweep.sweepId);
    const taken = await store.require(sweep.sweepId);
    expect(taken.driver).toBe("driver-b");
    expect(taken.trials[0]?.aps.map((ap) => Math.round(ap * 10) / 10)).toEqual([0.3]);
    expect(shared.started).toHaveLength(2);
  });

  it("takes over a sweep whose driver died once its lease runs out", async () => {
    const a = setup("driver-dead", 200);
    const b = setup("driver-c", 200);
    b.driver.attach(a.jobs);
    const { sweep } = await a.handlers.start(request({ parameters: [{ key: "TRAIN.LR", values: ["0.001"] }] }), "", []);
    a.jobs.validate(sweep.trials[0]!.jobId, 1, 0.25);
    a.jobs.finish(sweep.trials[0]!.jobId);
    // A never drives again (killed); B waits out its lease.
    await b.driver.drive(sweep.sweepId);
    expect((await store.require(sweep.sweepId)).driver).toBe("driver-dead");
    await new Promise((resolve) => setTimeout(resolve, 250));
    await b.driver.drive(sweep.sweepId);
    const done = await store.require(sweep.sweepId);
    expect(done.driver).toBe("driver-c");
    expect(SweepState[done.state]).toBe("SUCCEEDED");
    expect(a.jobs.started).toHaveLength(1);
  });

  it("CancelSweep cancels the running trials' jobs and ends the sweep; a second cancel is refused", async () => {
    const { jobs, handlers, driver } = setup();
    const { sweep } = await handlers.start(request({ parameters: [{ key: "TRAIN.LR", values: ["0.001", "0.01"] }] }), "", []);
    jobs.finish(sweep.trials[0]!.jobId);
    await driver.drive(sweep.sweepId);
    const result = await handlers.cancel(create(CancelSweepRequestSchema, { sweepId: sweep.sweepId, reason: "enough" }), () => undefined);
    expect(SweepState[result.sweep.state]).toBe("CANCELLED");
    expect(result.sweep.message).toBe("cancel requested: enough");
    expect(jobs.cancelled).toEqual([sweep.trials[1]!.jobId]);
    expect(result.sweep.trials.map((t) => TrialState[t.state])).toEqual(["SUCCEEDED", "CANCELLED"]);
    await expect(handlers.cancel(create(CancelSweepRequestSchema, { sweepId: sweep.sweepId }), () => undefined)).rejects.toThrow(/already ended \(CANCELLED\)/);
  });
});
