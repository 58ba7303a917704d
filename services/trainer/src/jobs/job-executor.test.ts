import { create } from "@bufbuild/protobuf";
import { EmbeddedBus, ModelRegistry, type JobDelivery } from "@poseloop/bus";
import { AppError, Code, silentLogger } from "@poseloop/core";
import { JobSchema, JobState } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { makeTempDir } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tinyTrainConfig } from "../testing/tiny-config.js";
import { CheckpointList } from "./checkpoint-list.js";
import type { CheckpointStore } from "./checkpoint-store.js";
import { JobExecutor } from "./job-executor.js";
import { JobStore, newJobId } from "./job-store.js";

/** A checkpoint store that never answers, so every attempt of a resumed job fails the same way. */
const unreachable: CheckpointStore = {
  put: async () => {
    throw new AppError(Code.UNAVAILABLE, "the checkpoint store does not answer");
  },
  get: async () => {
    throw new AppError(Code.UNAVAILABLE, "the checkpoint store does not answer");
  },
  delete: async () => undefined,
};

function delivery(jobId: string, deliveryCount: number): { delivery: JobDelivery; settled: string[] } {
  const settled: string[] = [];
  return {
    settled,
    delivery: {
      id: jobId,
      data: new TextEncoder().encode(JSON.stringify({ jobId })),
      headers: {},
      deliveryCount,
      ack: async () => {
        settled.push("ack");
      },
      nak: async () => {
        settled.push("nak");
      },
      heartbeat: async () => undefined,
      term: async () => {
        settled.push("term");
      },
    },
  };
}

describe("JobExecutor redelivery limit", () => {
  let dir: { path: string; remove: () => Promise<void> };
  let store: JobStore;
  let executor: JobExecutor;
  const enqueued: { id: string; dedupId?: string }[] = [];
  beforeAll(async () => {
    dir = await makeTempDir("poseloop-executor-");
    const bus = await EmbeddedBus.open(dir.path);
    store = await JobStore.open(bus);
    executor = new JobExecutor({
      store,
      checkpoints: unreachable,
      checkpointList: await CheckpointList.open(bus),
      registry: await ModelRegistry.open(bus, silentLogger),
      roots: { dataRoot: dir.path, workDir: dir.path },
      workerId: "trainer-t",
      logger: silentLogger,
      ackWaitMs: 60_000,
      maxDeliveries: 3,
      queue: {
        enqueue: async (job) => {
          enqueued.push({ id: job.id, ...(job.dedupId === undefined ? {} : { dedupId: job.dedupId }) });
        },
      },
    });
  });
  afterAll(async () => dir.remove());

  it("ends a job that fails the same way on every delivery FAILED with the reason on the last one", async () => {
    const jobId = newJobId();
    const lastCheckpoint = { checkpointId: "e1-s5", jobId, epoch: 1, step: 5n, location: `${jobId}/e1-s5.ckpt`, digest: `sha256:${"0".repeat(64)}` };
    await store.create(create(JobSchema, { jobId, state: JobState.QUEUED, config: tinyTrainConfig(), lastCheckpoint }));
    const signal = new AbortController().signal;
    for (const count of [1, 2]) {
      const { delivery: d, settled } = delivery(jobId, count);
      await executor.run(d, signal);
      expect(settled).toEqual(["nak"]);
      expect((await store.require(jobId)).job.state).toBe(JobState.RUNNING);
    }
    const { delivery: last, settled } = delivery(jobId, 3);
    await executor.run(last, signal);
    expect(settled).toEqual(["term"]);
    const { job } = await store.require(jobId);
    expect(job.state).toBe(JobState.FAILED);
    expect(job.error?.message).toMatch(/gave up after 3 deliveries.*the checkpoint store does not answer/);
    const end = (await store.events(jobId)).at(-1)?.event;
    expect(end?.case === "stateChanged" && end.value.to).toBe(JobState.FAILED);
    // Its own earlier attempts are not blamed on another trainer that "stopped responding".
    const reasons = (await store.events(jobId)).flatMap((e) => (e.event.case === "stateChanged" && e.event.value.to === JobState.RUNNING ? [e.event.value.reason] : []));
    expect(reasons.slice(1).every((reason) => !reason.includes("stopped responding"))).toBe(true);
  });

  it("queues a job handed back on its last delivery again instead of letting a stopping trainer use it up", async () => {
    const jobId = newJobId();
    const lastCheckpoint = { checkpointId: "e1-s5", jobId, epoch: 1, step: 5n, location: `${jobId}/e1-s5.ckpt`, digest: `sha256:${"0".repeat(64)}` };
    await store.create(create(JobSchema, { jobId, state: JobState.QUEUED, config: tinyTrainConfig(), lastCheckpoint }));
    const stopping = new AbortController();
    stopping.abort();
    const { delivery: last, settled } = delivery(jobId, 3);
    await executor.run(last, stopping.signal);
    expect(settled).toEqual(["ack"]);
    expect(enqueued.filter((job) => job.id === jobId)).toHaveLength(1);
    expect((await store.require(jobId)).job.state).toBe(JobState.RUNNING);
  });
});
