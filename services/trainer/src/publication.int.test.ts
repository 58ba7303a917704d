import { readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { ModelRegistry, openBus, type Bus, type JobDelivery } from "@poseloop/bus";
import { silentLogger } from "@poseloop/core";
import { PublishMode, type TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { JobSchema, JobState, type Job, type JobEvent } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { makeTempDir } from "@poseloop/testkit";
import { decodeTrainingState } from "@poseloop/train";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DataRoots } from "./datasets/data-root.js";
import { CheckpointList } from "./jobs/checkpoint-list.js";
import { DirectoryCheckpointStore, type CheckpointStore, type StoredCheckpoint } from "./jobs/checkpoint-store.js";
import { JobExecutor } from "./jobs/job-executor.js";
import { JobStore, newJobId } from "./jobs/job-store.js";
import { decodeCheckpoint } from "./runner/checkpoint-file.js";
import { tinyTrainConfig } from "./testing/tiny-config.js";

// Publication straight through the job executor on the embedded bus: what it exports from, and what it reads.

/** Checkpoints on disk, each spoilt right after it is written when `corrupt` is on; it remembers what it was given. */
class SpoilingCheckpointStore implements CheckpointStore {
  readonly written = new Map<string, Uint8Array>();
  corrupt = false;
  readonly #inner: DirectoryCheckpointStore;
  readonly #root: string;
  constructor(root: string) {
    this.#root = root;
    this.#inner = new DirectoryCheckpointStore(root);
  }
  async put(jobId: string, checkpointId: string, bytes: Uint8Array): Promise<StoredCheckpoint> {
    const stored = await this.#inner.put(jobId, checkpointId, bytes);
    this.written.set(checkpointId, Uint8Array.from(bytes));
    if (this.corrupt) await writeFile(join(this.#root, stored.location), Uint8Array.from(bytes).reverse());
    return stored;
  }
  get(location: string, digest: string): Promise<Uint8Array> {
    return this.#inner.get(location, digest);
  }
  delete(location: string): Promise<void> {
    return this.#inner.delete(location);
  }
}

let dir: { path: string; remove: () => Promise<void> };
let bus: Bus;
let store: JobStore;
let registry: ModelRegistry;
let checkpoints: SpoilingCheckpointStore;
let executor: JobExecutor;
let roots: DataRoots;

beforeAll(async () => {
  dir = await makeTempDir("poseloop-publication-");
  bus = await openBus({ natsServers: [], embeddedDir: join(dir.path, "bus") });
  store = await JobStore.open(bus);
  registry = await ModelRegistry.open(bus, silentLogger);
  checkpoints = new SpoilingCheckpointStore(join(dir.path, "checkpoints"));
  roots = { dataRoot: dir.path, workDir: join(dir.path, "work") };
  executor = new JobExecutor({ store, checkpoints, checkpointList: await CheckpointList.open(bus), registry, roots, workerId: "publication-test", logger: silentLogger, ackWaitMs: 60_000 });
});

afterAll(async () => {
  await bus?.close();
  await dir?.remove();
});

/** Runs a job to its end as a trainer taking it from the queue would; its events. */
async function runJob(config: TrainConfig): Promise<{ job: Job; events: JobEvent[] }> {
  const now = timestampNow();
  const jobId = newJobId();
  await store.create(create(JobSchema, { jobId, state: JobState.QUEUED, config, createdAt: now, updatedAt: now }));
  let acked = false;
  const delivery: JobDelivery = {
    id: jobId,
    data: new TextEncoder().encode(JSON.stringify({ jobId })),
    headers: {},
    deliveryCount: 1,
    ack: async () => {
      acked = true;
    },
    nak: async () => undefined,
    heartbeat: async () => undefined,
    term: async () => undefined,
  };
  await executor.run(delivery, new AbortController().signal);
  expect(acked).toBe(true);
  return { job: (await store.require(jobId)).job, events: await store.events(jobId, 0n) };
}

/** The param:/buffer: tensors of a training state: the weights, without optimizer state. */
function weightsOf(state: Uint8Array): Map<string, Float32Array> {
  return new Map([...decodeTrainingState(state).tensors].filter(([name]) => name.startsWith("param:") || name.startsWith("buffer:")));
}

async function publishedWeights(name: string, version: string): Promise<Uint8Array> {
  const manifest = await registry.getManifest(name, version);
  const artifact = manifest.artifacts.find((a) => a.objectName.endsWith("/weights.ptw"));
  return registry.getArtifact(artifact?.objectName ?? "", { expectedDigest: artifact?.digest ?? "" });
}

describe("publication", () => {
  it("of the FINAL weights exports what the training worker holds, not the checkpoint file it just wrote", async () => {
    checkpoints.corrupt = true;
    try {
      const { job, events } = await runJob(tinyTrainConfig({ endEpoch: 1, schedule: { kind: 1 }, publish: { mode: PublishMode.FINAL, modelName: "final-held" } }));
      expect(job.state, job.error?.message).toBe(JobState.SUCCEEDED);
      const published = events.flatMap((e) => (e.event.case === "published" ? [e.event.value] : []));
      expect(published).toHaveLength(1);
      const last = job.lastCheckpoint?.checkpointId ?? "";
      expect(published[0]?.checkpointId).toBe(last);
      // Every stored copy is spoilt; the version carries the final weights exactly as the worker held them.
      await expect(checkpoints.get(job.lastCheckpoint?.location ?? "", job.lastCheckpoint?.digest ?? "")).rejects.toThrow(/corrupt/);
      const held = weightsOf(decodeCheckpoint(checkpoints.written.get(last) as Uint8Array).state);
      const shipped = weightsOf(await publishedWeights("final-held", published[0]?.manifest?.model?.version ?? ""));
      expect([...shipped.keys()]).toEqual([...held.keys()]);
      expect(held.size).toBeGreaterThan(0);
      for (const [name, data] of held) expect(Buffer.from((shipped.get(name) as Float32Array).buffer).equals(Buffer.from(data.buffer)), name).toBe(true);
    } finally {
      checkpoints.corrupt = false;
    }
  });

  it("of a kept checkpoint (PublishCheckpoint) needs only the validation set: the training set may be gone", async () => {
    const config = tinyTrainConfig({ endEpoch: 1, schedule: { kind: 1 }, data: { kind: 2, synthetic: { trainImages: 40, valImages: 8, imageWidth: 128, imageHeight: 96, maxPeople: 2, seed: 77n }, name: "gone" }, publish: { modelName: "republished" } });
    const { job } = await runJob(config);
    expect(job.state, job.error?.message).toBe(JobState.SUCCEEDED);
    // The training split of this job's dataset is deleted; its validation split stays.
    const synthetic = join(roots.workDir, "synthetic");
    let removed = 0;
    for (const entry of await readdir(synthetic)) {
      const options = JSON.parse(await readFile(join(synthetic, entry, ".complete"), "utf8").catch(() => "{}")) as { seed?: string };
      if (options.seed !== "77") continue;
      await rm(join(synthetic, entry, "annotations", "person_keypoints_train.json"));
      await rm(join(synthetic, entry, "train"), { recursive: true });
      removed++;
    }
    expect(removed).toBe(1);

    const checkpointId = job.lastCheckpoint?.checkpointId ?? "";
    const { serving, previous } = await executor.publishCheckpoint(job, checkpointId, { modelName: "republished", skipPromotion: false });
    expect(serving.trainingJobId).toBe(job.jobId);
    expect(serving.labels["checkpoint"]).toBe(checkpointId);
    expect(serving.metrics?.numImages).toBe(8);
    expect(previous?.version).toBe(job.published.at(-1)?.version);
    expect(serving.model?.version).not.toBe(previous?.version);
    expect((await registry.getServing("republished"))?.record.model?.version).toBe(serving.model?.version);
  });
});
