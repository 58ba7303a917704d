import { AppError, Code } from "@poseloop/core";
import { JobState, SweepSearch, SweepState } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { afterEach, describe, expect, it } from "vitest";
import { fakeJob, startFakeTrainer, type FakeTrainerScript } from "../testing/fake-services.js";
import { TrainerClient } from "./trainer-client.js";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function setup(script: FakeTrainerScript = {}, options: ConstructorParameters<typeof TrainerClient>[0] = {}) {
  const server = await startFakeTrainer(script);
  cleanups.push(() => server.stop());
  const client = new TrainerClient({ address: server.address, ...options });
  cleanups.push(() => client.close());
  return { server, client };
}

const progress = (step: number) => ({ event: { case: "progress" as const, value: { step: BigInt(step) } } });

describe("TrainerClient", () => {
  it("sends the experiment text with overrides as strings, labels and the bearer token", async () => {
    const { client, server } = await setup({}, { token: "t0k" });
    const { job } = await client.startTraining({ experimentYaml: "TRAIN:\n  LR: 0.001\n", overrides: { "TRAIN.LR": 5e-4, "TRAIN.END_EPOCH": 20 }, labels: { team: "pose" }, idempotencyKey: "k1" });
    expect(job?.jobId).toBe("job-1");
    const call = server.calls[0]!;
    expect(call.headers["authorization"]).toBe("Bearer t0k");
    expect(call.request).toMatchObject({
      source: { case: "experimentYaml", value: "TRAIN:\n  LR: 0.001\n" },
      overrides: { "TRAIN.LR": "0.0005", "TRAIN.END_EPOCH": "20" },
      labels: { team: "pose" },
      idempotencyKey: "k1",
    });
  });

  it("starts a sweep with the request's fields and the bearer token, and follows its updates to the end", async () => {
    const id = "sweep-20261205-142000-abcdef";
    const { client, server } = await setup({ sweeps: [{ sweepId: id, state: SweepState.RUNNING }], sweepUpdates: { [id]: [{ sweepId: id, state: SweepState.RUNNING }, { sweepId: id, state: SweepState.SUCCEEDED, bestTrial: 0 }] } }, { token: "t0k" });
    const sweep = await client.startSweep({ experimentYaml: "NAME: x\n", parameters: [{ key: "TRAIN.LR", values: ["0.001", "0.01"] }], search: SweepSearch.GRID, timeoutMs: 5_000 });
    expect(sweep.sweepId).toBe(id);
    const call = server.calls[0]!;
    expect(call.headers["authorization"]).toBe("Bearer t0k");
    expect(call.request).toMatchObject({ experimentYaml: "NAME: x\n", parameters: [{ key: "TRAIN.LR", values: ["0.001", "0.01"] }] });
    const states: SweepState[] = [];
    for await (const update of client.watchSweep(id)) states.push(update.state);
    expect(states).toEqual([SweepState.RUNNING, SweepState.SUCCEEDED]);
    expect((await client.cancelSweep(id)).state).toBe(SweepState.CANCELLED);
    await expect(client.getSweep("sweep-20261205-142000-000000")).rejects.toSatisfy((e) => AppError.is(e, Code.NOT_FOUND));
  });

  it("needs exactly one of experimentYaml and config", async () => {
    const { client } = await setup();
    await expect(client.startTraining({})).rejects.toThrow("startTraining needs exactly one of experimentYaml and config");
    await expect(client.startTraining({ experimentYaml: "x", config: {} })).rejects.toSatisfy((e) => AppError.is(e, Code.INVALID_ARGUMENT));
  });

  it("returns the trainer's problems with its INVALID_ARGUMENT", async () => {
    const { client } = await setup({ start: AppError.invalid("experiment", ["TRAIN.LR must be positive", "unknown key TRAIN.FOO"]) });
    const error = await client.startTraining({ experimentYaml: "x" }).catch((e: unknown) => e);
    expect(AppError.is(error, Code.INVALID_ARGUMENT)).toBe(true);
    expect((error as AppError).problems).toEqual(["TRAIN.LR must be positive", "unknown key TRAIN.FOO"]);
  });

  it("applies per-call deadlines and names the trainer when one passes", async () => {
    const { client } = await setup({ delayMs: 2000, jobs: [fakeJob({ jobId: "j" })] });
    const started = Date.now();
    const error = await client.getJob("j", { timeoutMs: 100 }).catch((e: unknown) => e);
    expect(Date.now() - started).toBeLessThan(1500);
    expect(AppError.is(error, Code.DEADLINE_EXCEEDED)).toBe(true);
    expect((error as AppError).message).toContain("the trainer at");
  });

  it("watches a job's events and continues after the last one seen when the trainer drops the stream", async () => {
    const { client, server } = await setup({
      events: { j: [progress(10), progress(20), progress(30), { event: { case: "stateChanged", value: { to: JobState.SUCCEEDED } } }] },
      dropWatchAfter: 2,
    });
    const sequences: bigint[] = [];
    for await (const event of client.watchJob("j", { reconnect: { delayMs: 10 } })) sequences.push(event.sequence);
    expect(sequences).toEqual([1n, 2n, 3n, 4n]);
    const watches = server.calls.filter((c) => c.method === "watchJob").map((c) => (c.request as { afterSequence: bigint }).afterSequence);
    expect(watches).toEqual([0n, 2n]);
  });

  it("fails a watch at once when the trainer was never reached", async () => {
    const { client, server } = await setup();
    await server.stop();
    const started = Date.now();
    const error = await (async () => {
      for await (const _ of client.watchJob("j")) break;
    })().catch((e: unknown) => e);
    expect(AppError.is(error, Code.UNAVAILABLE)).toBe(true);
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it("publishes, rolls back and sets a version through PublishCheckpoint's three targets", async () => {
    const { client, server } = await setup();
    await client.publishCheckpoint({ jobId: "j", checkpointId: "e1", skipPromotion: true, reason: "try" });
    await client.rollback("demo", { reason: "bad" });
    await client.setServingVersion({ name: "demo", version: "v1" });
    const targets = server.calls.map((c) => (c.request as { target: { case: string; value: unknown } }).target);
    expect(targets[0]).toMatchObject({ case: "checkpoint", value: { jobId: "j", checkpointId: "e1", skipPromotion: true } });
    expect(targets[1]).toEqual({ case: "rollbackModelName", value: "demo" });
    expect(targets[2]).toMatchObject({ case: "version", value: { name: "demo", version: "v1" } });
  });

  it("asks for the trainers' capabilities: the one that answered and the other live ones", async () => {
    const { client, server } = await setup(
      {
        trainerInfo: {
          trainer: { workerId: "t1", maxConcurrentJobs: 1, engines: [{ name: "pytorch", available: true, version: "1.13.0", devices: ["cpu", "cuda:0"], gpuCount: 1 }] },
          others: [{ workerId: "t2", engines: [{ name: "pytorch", available: false, reason: "torch cannot be imported" }] }],
        },
      },
      { token: "t0k" },
    );
    const { trainer, others } = await client.getTrainerInfo();
    expect(trainer?.workerId).toBe("t1");
    expect(trainer?.engines[0]).toMatchObject({ name: "pytorch", version: "1.13.0", devices: ["cpu", "cuda:0"], gpuCount: 1 });
    expect(others.map((other) => [other.workerId, other.engines[0]?.reason])).toEqual([["t2", "torch cannot be imported"]]);
    expect(server.calls[0]?.headers["authorization"]).toBe("Bearer t0k");
  });
});
