import { create } from "@bufbuild/protobuf";
import { AppError, Code } from "@poseloop/core";
import { ImageSizeSchema, ScheduleKind } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { BlobCheckpointStore } from "./jobs/checkpoint-store.js";
import { JobStore } from "./jobs/job-store.js";
import { JobState, type JobEvent } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { createClient } from "@poseloop/grpc";
import { TrainerService } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { NatsServer, makeTempDir, spawnService, waitFor, type ServiceProcess } from "@poseloop/testkit";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { decodeCheckpoint } from "./runner/checkpoint-file.js";
import { jobEvents, startTrainerHarness, type TrainerClient, type TrainerHarness } from "./testing/harness.js";
import { tinyTrainConfig } from "./testing/tiny-config.js";

// A nats-server of this file's own: trainers on one bus share the training queue, and another file's
// trainer must not take this file's jobs.
const nats = await NatsServer.start();
afterAll(async () => nats.dispose());
const natsUrl = nats.url;

/** Long enough to interrupt: 200 training images, 25 micro-batches per epoch. */
function slowConfig(modelName: string, endEpoch = 3, schedule?: { kind: ScheduleKind }) {
  return tinyTrainConfig({
    name: "slow",
    endEpoch,
    ...(schedule === undefined ? {} : { schedule }),
    logEverySteps: 2,
    data: { kind: 2, synthetic: { trainImages: 200, valImages: 8, imageWidth: 128, imageHeight: 96, maxPeople: 1, seed: 9n }, name: "slow" },
    publish: { mode: 1, modelName },
  });
}

async function finalState(harness: { registry: unknown }, client: TrainerClient, store: BlobCheckpointStore, jobId: string): Promise<Uint8Array> {
  void harness;
  const { checkpoints } = await client.listCheckpoints({ jobId });
  const last = checkpoints.at(-1);
  if (last === undefined) throw new Error(`job ${jobId} has no checkpoints`);
  return decodeCheckpoint(await store.get(last.location, last.digest)).state;
}

describe("job lifecycle: cancel, resume, rollback", () => {
  let dir: { path: string; remove: () => Promise<void> };
  let harness: TrainerHarness;
  beforeAll(async () => {
    dir = await makeTempDir("poseloop-lifecycle-");
    harness = await startTrainerHarness(natsUrl, dir.path);
  });
  afterAll(async () => {
    await harness.close();
    await dir.remove();
  });

  it("cancels at a step boundary keeping a checkpoint, resumes from it to the end, and rolls the serving version back", async () => {
    const client = harness.client;
    // A first version to roll back to.
    const first = await client.startTraining({ source: { case: "config", value: tinyTrainConfig({ publish: { modelName: "lifecycle" }, endEpoch: 1, schedule: { kind: 1 } }) } });
    await jobEvents(client, first.job?.jobId ?? "");
    const firstVersion = (await harness.registry.getServing("lifecycle"))?.record.model?.version;
    expect(firstVersion).toBeDefined();

    const { job } = await client.startTraining({ source: { case: "config", value: slowConfig("lifecycle") } });
    const jobId = job?.jobId ?? "";
    const seen: JobEvent[] = [];
    const watching = (async () => {
      for await (const r of client.watchJob({ jobId })) if (r.event !== undefined) seen.push(r.event);
    })();
    await waitFor(() => seen.some((e) => e.event.case === "progress"), { timeoutMs: 60_000, what: "progress" });
    const cancelled = await client.cancelJob({ jobId, reason: "test" });
    expect([JobState.CANCELLING, JobState.CANCELLED]).toContain(cancelled.job?.state);
    await watching;
    const end = seen.at(-1)?.event;
    expect(end?.case === "stateChanged" && end.value.to).toBe(JobState.CANCELLED);
    const saved = seen.flatMap((e) => (e.event.case === "checkpointSaved" ? [e.event.value.checkpoint] : []));
    expect(saved.at(-1)?.reason).toBe(3); // CANCEL
    const stoppedAt = saved.at(-1);
    const { job: afterCancel } = await client.getJob({ jobId });
    expect(afterCancel?.state).toBe(JobState.CANCELLED);
    expect(afterCancel?.lastCheckpoint?.checkpointId).toBe(stoppedAt?.checkpointId);
    await expect(client.cancelJob({ jobId })).rejects.toMatchObject({ code: Code.FAILED_PRECONDITION });

    const resumed = await client.resumeJob({ jobId });
    expect(resumed.job?.state).toBe(JobState.QUEUED);
    const rest = await jobEvents(client, jobId, { skipProgress: true });
    const resumedAt = rest.findLast((e) => e.event.case === "stateChanged" && e.event.value.to === JobState.RUNNING);
    expect(resumedAt?.event.case === "stateChanged" && resumedAt.event.value.reason).toBe("resumed");
    const final = rest.at(-1)?.event;
    expect(final?.case === "stateChanged" && final.value.to).toBe(JobState.SUCCEEDED);
    const { job: done } = await client.getJob({ jobId });
    expect(done?.attempt).toBe(2);
    // Training continued where it stopped: no epoch-0 validation was redone before the cancel point.
    const validations = rest.flatMap((e) => (e.event.case === "validation" ? [e.event.value.epoch] : []));
    expect(Math.min(...validations)).toBeGreaterThanOrEqual(stoppedAt?.epoch ?? 0);
    const secondVersion = done?.published.at(-1)?.version;
    expect((await harness.registry.getServing("lifecycle"))?.record.model?.version).toBe(secondVersion);

    const rolled = await client.publishCheckpoint({ target: { case: "rollbackModelName", value: "lifecycle" }, reason: "test rollback" });
    expect(rolled.serving?.model?.version).toBe(firstVersion);
    expect(rolled.previous?.version).toBe(secondVersion);
    expect((await harness.registry.getServing("lifecycle"))?.record.model?.version).toBe(firstVersion);

    // Any kept checkpoint can be published again as a new version.
    const { checkpoints } = await client.listCheckpoints({ jobId });
    const republished = await client.publishCheckpoint({ target: { case: "checkpoint", value: { jobId, checkpointId: checkpoints[0]?.checkpointId ?? "" } } });
    expect(republished.serving?.trainingJobId).toBe(jobId);
    expect(republished.serving?.model?.version).not.toBe(secondVersion);
  });

  it("resumes to a larger END_EPOCH once a checkpoint exists; a resume its checkpoint refuses names the setting and changes nothing", async () => {
    const client = harness.client;
    const { job } = await client.startTraining({ source: { case: "config", value: slowConfig("resume-longer", 1, { kind: ScheduleKind.CONSTANT }) } });
    const jobId = job?.jobId ?? "";
    /** The first progress report after event `after`, then a cancel; the events until the job stops. */
    const cancelAtProgress = async (after: bigint): Promise<JobEvent[]> => {
      let progress: JobEvent | undefined;
      for await (const r of client.watchJob({ jobId, afterSequence: after })) {
        if (r.event?.event.case === "progress") {
          progress = r.event;
          break;
        }
      }
      await client.cancelJob({ jobId, reason: "test" });
      return [...(progress === undefined ? [] : [progress]), ...(await jobEvents(client, jobId, { skipProgress: true }))];
    };
    const lastSequence = async (): Promise<bigint> => (await jobEvents(client, jobId)).at(-1)?.sequence ?? 0n;
    const ended = (events: JobEvent[]) => {
      const end = events.at(-1)?.event;
      return end?.case === "stateChanged" ? end.value : undefined;
    };

    expect(ended(await cancelAtProgress(0n))?.to).toBe(JobState.CANCELLED);
    const stoppedAt = (await client.getJob({ jobId })).job?.lastCheckpoint;
    expect(stoppedAt?.epoch).toBe(0);

    // No RPC changes what shapes a checkpoint's state, so the record is edited as a trainer of another version
    // might have written it: a resume then fails naming the setting, and the END_EPOCH it asked for is not kept.
    const records = await JobStore.open(harness.observerBus);
    const setImageSize = (width: number, height: number) =>
      records.update(jobId, (j) => {
        if (j.config?.model !== undefined) j.config.model.inputSize = create(ImageSizeSchema, { width, height });
      });
    await setImageSize(96, 128);
    let after = await lastSequence();
    await client.resumeJob({ jobId, endEpoch: 2 });
    const refused = ended(await jobEvents(client, jobId, { skipProgress: true }));
    expect(refused?.to).toBe(JobState.FAILED);
    expect(refused?.error?.message).toMatch(/^cannot resume job job-\S+: MODEL\.IMAGE_SIZE differs from its checkpoint \(\[48, 64\] there, \[96, 128\] now\)/);
    const { job: afterRefusal } = await client.getJob({ jobId });
    expect(afterRefusal?.config?.endEpoch).toBe(1);
    expect(afterRefusal?.lastCheckpoint?.checkpointId).toBe(stoppedAt?.checkpointId);
    await setImageSize(48, 64);

    // A plain resume runs to the END_EPOCH the job had (stopped again to keep the test short).
    after = await lastSequence();
    await client.resumeJob({ jobId });
    const plain = await cancelAtProgress(after);
    const progress = plain.find((e) => e.event.case === "progress")?.event;
    expect(progress?.case === "progress" && progress.value.endEpoch).toBe(1);
    expect(ended(plain)?.to).toBe(JobState.CANCELLED);

    // poseloop train --resume JOB --epochs 2: the checkpoint continues under the longer run.
    after = await lastSequence();
    await client.resumeJob({ jobId, endEpoch: 2 });
    const longer = (await jobEvents(client, jobId, { skipProgress: true })).filter((e) => e.sequence > after);
    expect(ended(longer)?.to, JSON.stringify(ended(longer)?.error)).toBe(JobState.SUCCEEDED);
    expect(longer.flatMap((e) => (e.event.case === "validation" ? [e.event.value.epoch] : []))).toEqual([1, 2]);
    const { job: done } = await client.getJob({ jobId });
    expect(done?.config?.endEpoch).toBe(2);
    expect(done?.lastCheckpoint?.epoch).toBe(2);
  });

  it("stops a run whose job another trainer took over while it was silent: one end, one publication", async () => {
    const client = harness.client;
    const { job } = await client.startTraining({ source: { case: "config", value: slowConfig("fenced", 1, { kind: ScheduleKind.CONSTANT }) } });
    const jobId = job?.jobId ?? "";
    for await (const r of client.watchJob({ jobId })) if (r.event?.event.case === "progress") break;

    // What a second trainer does when this one's heartbeats stopped (a blocked main thread): a new attempt.
    const records = await JobStore.open(harness.observerBus);
    const taken = await records.update(jobId, (j) => {
      j.workerId = "trainer-elsewhere";
      j.attempt += 1;
    });
    expect(taken.attempt).toBe(2);

    // The stale run stops without writing; "trainer-elsewhere" never heartbeats, so the job comes back to the
    // harness's trainer after the ack wait, which takes it over in turn and finishes it.
    const events = await jobEvents(client, jobId, { skipProgress: true, timeoutMs: 180_000 });
    const changes = events.flatMap((e) => (e.event.case === "stateChanged" ? [e.event.value] : []));
    expect(changes.map((c) => JobState[c.to])).toEqual(["QUEUED", "RUNNING", "RUNNING", "SUCCEEDED"]);
    expect(changes[2]?.reason).toMatch(/^taken over from trainer-elsewhere/);
    const { job: done } = await client.getJob({ jobId });
    expect(done?.attempt).toBe(3);
    expect(done?.workerId).not.toBe("trainer-elsewhere");
    expect(done?.published).toHaveLength(1);
    expect(await harness.registry.listVersions("fenced")).toHaveLength(1);
  }, 300_000);

  it("refuses dataset paths outside the data root with PERMISSION_DENIED", async () => {
    const yaml = ["NAME: escape", "MODEL:", "  NAME: pose_lite", "  IMAGE_SIZE: [48, 64]", "DATASET:", "  DATASET: coco", "  ROOT: ../../etc", "  TRAIN_SET: train2017", "  TEST_SET: val2017", "TRAIN:", "  LR: 0.001", "  BATCH_SIZE_PER_GPU: 8", "  END_EPOCH: 1", "PUBLISH:", "  MODEL_NAME: escape"].join("\n");
    const error = await harness.client.startTraining({ source: { case: "experimentYaml", value: yaml } }).catch((e: unknown) => e);
    expect(AppError.is(error, Code.PERMISSION_DENIED)).toBe(true);
  });
});

describe("job lifecycle: NATS restarts mid-job", () => {
  // A server of its own: killing it must not disturb the other trainers of this file.
  let outage: NatsServer;
  let dir: { path: string; remove: () => Promise<void> };
  let harness: TrainerHarness;
  beforeAll(async () => {
    outage = await NatsServer.start();
    dir = await makeTempDir("poseloop-outage-");
    // A lease longer than the outage: the job stays this trainer's, so only the retried writes can save the run.
    harness = await startTrainerHarness(outage.url, dir.path, { POSELOOP_JOB_ACK_WAIT: "60s" });
  });
  afterAll(async () => {
    await harness.close();
    await outage.dispose();
    await dir.remove();
  });

  it("pauses the run's writes while the server is down and finishes the job in the same attempt", async () => {
    const client = harness.client;
    const { job } = await client.startTraining({ source: { case: "config", value: slowConfig("outage", 1, { kind: ScheduleKind.CONSTANT }) } });
    const jobId = job?.jobId ?? "";
    for await (const r of client.watchJob({ jobId })) if (r.event?.event.case === "progress") break;

    await outage.kill(); // a crashed broker
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    await outage.restart();

    const done = await waitFor(
      async () => {
        const found = await client.getJob({ jobId }).catch(() => undefined);
        return found?.job !== undefined && [JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED].includes(found.job.state) ? found.job : undefined;
      },
      { timeoutMs: 180_000, intervalMs: 500, what: "the job's end" },
    );
    expect(done.state, done.error?.message).toBe(JobState.SUCCEEDED);
    expect(done.attempt).toBe(1);
    const records = await JobStore.open(harness.observerBus);
    const changes = (await records.events(jobId)).flatMap((e) => (e.event.case === "stateChanged" ? [JobState[e.event.value.to]] : []));
    expect(changes).toEqual(["QUEUED", "RUNNING", "SUCCEEDED"]);
    expect(await harness.registry.listVersions("outage")).toHaveLength(1);
  }, 300_000);
});

describe("job lifecycle: a trainer killed mid-epoch", () => {
  const TRAINER = "services/trainer/src/main.ts";
  const running: ServiceProcess[] = [];
  let dir: { path: string; remove: () => Promise<void> };
  beforeAll(async () => {
    dir = await makeTempDir("poseloop-crash-");
  });
  afterEach(async () => {
    await Promise.all(running.splice(0).map((service) => service.stop("SIGKILL")));
  });
  afterAll(async () => dir.remove());

  async function trainer(id: string): Promise<{ process: ServiceProcess; client: TrainerClient }> {
    const process = await spawnService(TRAINER, {
      POSELOOP_TRAINER_LISTEN: "127.0.0.1:0",
      POSELOOP_NATS_URL: natsUrl,
      POSELOOP_DATA_ROOT: dir.path,
      POSELOOP_WORK_DIR: dir.path,
      POSELOOP_WORKER_ID: id,
      POSELOOP_JOB_ACK_WAIT: "3s",
      POSELOOP_LOG_LEVEL: "info",
      POSELOOP_DRAIN_TIMEOUT: "2s",
    });
    running.push(process);
    return { process, client: createClient(TrainerService, `127.0.0.1:${process.port}`) };
  }

  it("is taken over by another trainer from its last checkpoint and ends bit-identical to an uninterrupted run", async () => {
    const bus = await import("@poseloop/bus").then((m) => m.NatsBus.connect({ servers: natsUrl, name: "crash-observer" }));
    try {
      const store = await BlobCheckpointStore.open(bus);
      const a = await trainer("trainer-a");
      const config = slowConfig("crash", 2);
      const { job } = await a.client.startTraining({ source: { case: "config", value: config } });
      const jobId = job?.jobId ?? "";
      // Kill trainer A (SIGKILL: no cleanup at all) in epoch 1, after the epoch-0 checkpoint.
      for await (const r of a.client.watchJob({ jobId })) {
        const e = r.event?.event;
        if (e?.case === "progress" && e.value.epoch === 1 && e.value.stepInEpoch >= 6) break;
      }
      await a.process.stop("SIGKILL");
      const { job: orphaned } = await (await trainer("trainer-observer-api")).client.getJob({ jobId });
      expect(orphaned?.state).toBe(JobState.RUNNING);
      expect(orphaned?.workerId).toBe("trainer-a");
      expect(orphaned?.lastCheckpoint?.epoch).toBe(1);

      const b = await trainer("trainer-b");
      const events = await jobEvents(b.client, jobId, { skipProgress: true, timeoutMs: 180_000 });
      const takeover = events.find((e) => e.event.case === "stateChanged" && e.event.value.to === JobState.RUNNING && e.event.value.reason.includes("trainer-a"));
      expect(takeover).toBeDefined();
      const { job: done } = await b.client.getJob({ jobId });
      expect(done?.state).toBe(JobState.SUCCEEDED);
      expect(done?.workerId).not.toBe("trainer-a");
      expect(done?.attempt).toBe(2);

      // The same config, never interrupted.
      const { job: reference } = await b.client.startTraining({ source: { case: "config", value: config } });
      await jobEvents(b.client, reference?.jobId ?? "", { skipProgress: true, timeoutMs: 180_000 });
      const crashed = await finalState({ registry: undefined }, b.client, store, jobId);
      const uninterrupted = await finalState({ registry: undefined }, b.client, store, reference?.jobId ?? "");
      expect(crashed.byteLength).toBe(uninterrupted.byteLength);
      expect(Buffer.compare(Buffer.from(crashed), Buffer.from(uninterrupted))).toBe(0);
    } finally {
      await bus.close();
    }
  });
});
