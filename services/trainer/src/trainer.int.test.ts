import { create } from "@bufbuild/protobuf";
import { AppError, Code } from "@poseloop/core";
import { Precision } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { JobState } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { TrainConfigSchema } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { NatsServer, makeTempDir } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jobEvents, startTrainerHarness, type TrainerHarness } from "./testing/harness.js";
import { tinyTrainConfig } from "./testing/tiny-config.js";

// A nats-server of this file's own: trainers on one bus share the training queue, and another file's
// trainer must not take this file's jobs.
const nats = await NatsServer.start();
afterAll(async () => nats.dispose());
const natsUrl = nats.url;

describe("trainer service", () => {
  let dir: { path: string; remove: () => Promise<void> };
  let harness: TrainerHarness;
  beforeAll(async () => {
    dir = await makeTempDir("poseloop-trainer-");
    harness = await startTrainerHarness(natsUrl, dir.path);
  });
  afterAll(async () => {
    await harness.close();
    await dir.remove();
  });

  it("trains the tiny config: progress, validation AP, checkpoints and a verified int8 publication", async () => {
    const config = tinyTrainConfig({ publish: { modelName: "trainer-it" } });
    const { job } = await harness.client.startTraining({ source: { case: "config", value: config }, idempotencyKey: "it-1", labels: { suite: "trainer" } });
    expect(job?.state).toBe(JobState.QUEUED);
    const jobId = job?.jobId ?? "";
    const events = await jobEvents(harness.client, jobId);
    const kinds = events.map((e) => e.event.case);
    expect(events.map((e) => Number(e.sequence))).toEqual(events.map((_, i) => i + 1));
    expect(kinds).toContain("progress");
    expect(kinds.filter((k) => k === "validation")).toHaveLength(2);
    expect(kinds.filter((k) => k === "checkpointSaved").length).toBeGreaterThanOrEqual(2);
    expect(kinds).toContain("quantization");
    expect(kinds).toContain("published");
    const last = events.at(-1)?.event;
    expect(last?.case === "stateChanged" && last.value.to).toBe(JobState.SUCCEEDED);

    const progress = events.flatMap((e) => (e.event.case === "progress" ? [e.event.value] : []));
    for (const p of progress) {
      expect(Number.isFinite(p.loss) && p.loss > 0).toBe(true);
      expect(p.lr).toBeGreaterThan(0);
      expect(p.samplesPerSecond).toBeGreaterThan(0);
      expect(p.endEpoch).toBe(2);
    }
    const published = events.flatMap((e) => (e.event.case === "published" ? [e.event.value] : []))[0];
    const manifest = published?.manifest;
    expect(published?.promoted).toBe(true);
    expect(manifest?.trainingJobId).toBe(jobId);
    expect(manifest?.precision).toBe(Precision.INT8);
    expect(manifest?.metrics?.numImages).toBe(8);
    expect(manifest?.fp32Metrics?.numImages).toBe(8);
    expect(manifest?.quantization?.calibrator).not.toBe("");
    expect(manifest?.quantization?.weightRange).toBe(64);

    // The registry holds the version, serving, with an int8 artifact whose digest verifies.
    const serving = await harness.registry.getServing("trainer-it");
    expect(serving?.record.model?.version).toBe(manifest?.model?.version);
    const stored = await harness.registry.getManifest("trainer-it", manifest?.model?.version ?? "");
    const int8 = stored.artifacts.find((a) => a.precision === Precision.INT8);
    expect(int8?.digest).toBe(stored.model?.digest);
    const bytes = await harness.registry.getArtifact(int8?.objectName ?? "", { expectedDigest: int8?.digest ?? "" });
    expect(bytes.byteLength).toBeGreaterThan(1000);

    const { job: done } = await harness.client.getJob({ jobId });
    expect(done?.state).toBe(JobState.SUCCEEDED);
    expect(done?.published.map((r) => r.version)).toEqual([manifest?.model?.version]);
    expect(done?.bestMetrics?.numImages).toBe(8);
    expect(done?.attempt).toBe(1);
    const { checkpoints } = await harness.client.listCheckpoints({ jobId });
    expect(checkpoints.length).toBeGreaterThanOrEqual(2);
    expect(checkpoints.filter((c) => c.isBest)).toHaveLength(1);

    // The same idempotency key gives the same job.
    const again = await harness.client.startTraining({ source: { case: "config", value: config }, idempotencyKey: "it-1" });
    expect(again.existing).toBe(true);
    expect(again.job?.jobId).toBe(jobId);
  });

  it("fine-tunes from a published version with distillation from it as the teacher", async () => {
    const parent = (await harness.registry.getServing("trainer-it"))?.record.model?.version ?? "";
    expect(parent).not.toBe("");
    const config = tinyTrainConfig({
      name: "tiny-finetune",
      endEpoch: 1,
      schedule: { kind: 1 },
      publish: { modelName: "trainer-ft" },
      initFrom: { source: { case: "model", value: { name: "trainer-it", version: parent } }, skipLayers: ["final_layer"] },
      distillation: { teacher: { name: "trainer-it", version: parent }, lossWeight: 0.5, loss: 1 },
    });
    const { job } = await harness.client.startTraining({ source: { case: "config", value: config } });
    const events = await jobEvents(harness.client, job?.jobId ?? "", { skipProgress: true });
    const last = events.at(-1)?.event;
    expect(last?.case === "stateChanged" && last.value.to, JSON.stringify(last?.value)).toBe(JobState.SUCCEEDED);
    const published = events.flatMap((e) => (e.event.case === "published" ? [e.event.value.manifest] : []))[0];
    expect(published?.parentVersion).toBe(parent);
    expect(published?.trainingJobId).toBe(job?.jobId);

    const missing = tinyTrainConfig({ endEpoch: 1, schedule: { kind: 1 }, publish: { modelName: "trainer-ft" }, initFrom: { source: { case: "model", value: { name: "no-such-model", version: "" } } } });
    // A reference to nothing is refused at submission, not found out by a run that is redelivered.
    const refused = await harness.client.startTraining({ source: { case: "config", value: missing } }).catch((e: unknown) => e);
    expect(AppError.is(refused, Code.NOT_FOUND)).toBe(true);
    expect([(refused as AppError).message, ...(refused as AppError).problems].join("\n")).toMatch(/no-such-model/);
  });

  it("refuses invalid configs with INVALID_ARGUMENT naming every problem", async () => {
    const config = create(TrainConfigSchema, tinyTrainConfig());
    if (config.optimizer !== undefined) config.optimizer.lr = -0.1;
    config.batchSize = 0;
    if (config.schedule !== undefined) config.schedule.lrSteps = [1, 1];
    const error = await harness.client.startTraining({ source: { case: "config", value: config } }).catch((e: unknown) => e);
    expect(AppError.is(error, Code.INVALID_ARGUMENT)).toBe(true);
    const problems = (error as AppError).problems.join("\n");
    expect(problems).toMatch(/lr/i);
    expect(problems).toMatch(/batch/i);
    expect(problems).toMatch(/LR_STEP|lr_steps/i);

    const yaml = ["MODEL:", "  NAME: pose_lite", "  IMAGE_SIZE: [48, 64]", "TRAIN:", "  LR: -1", "  OPTIMIZER: rmsprop", "  BATCH_SIZE_PER_GPU: 0", "  LR_STEP: [5, 3]", "  LRR: 1", "DATASET:", "  DATASET: coco", "  ROOT: nowhere", "  TRAIN_SET: train2017", "  TEST_SET: val2017"].join("\n");
    const yamlError = await harness.client.startTraining({ source: { case: "experimentYaml", value: yaml } }).catch((e: unknown) => e);
    expect(AppError.is(yamlError, Code.INVALID_ARGUMENT)).toBe(true);
    const all = (yamlError as AppError).problems.join("\n");
    for (const pattern of [/TRAIN\.LR\b/, /rmsprop/, /BATCH_SIZE_PER_GPU/, /LR_STEP/, /TRAIN\.LRR/, /nowhere/]) expect(all).toMatch(pattern);
  });
});
