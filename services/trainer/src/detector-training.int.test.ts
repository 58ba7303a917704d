import { AppError, Code } from "@poseloop/core";
import { DetectorHead, ModelKind, Precision, ResizeMode } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { JobState } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { NatsServer, makeTempDir } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jobEvents, startTrainerHarness, type TrainerHarness } from "./testing/harness.js";

// A nats-server of this file's own: another file's trainer must not take this file's jobs.
const nats = await NatsServer.start();
afterAll(async () => nats.dispose());

/** A detector small enough for a test: 64x64 whole pictures of 2 people at most, one epoch. */
function detectorYaml(overrides: { pretrained?: string; flipTest?: boolean } = {}): string {
  return `NAME: tiny-detector
DATASET:
  DATASET: synthetic
  FLIP: true
  SCALE_FACTOR: 0.2
  SYNTHETIC:
    TRAIN_IMAGES: 16
    VAL_IMAGES: 6
    IMAGE_SIZE: [96, 72]
    MAX_PEOPLE: 2
    SEED: 4
MODEL:
  NAME: detector_lite
  IMAGE_SIZE: [64, 64]
${overrides.pretrained === undefined ? "" : `  PRETRAINED: ${overrides.pretrained}\n`}  EXTRA:
    CHANNELS: [8, 8, 16]
    HEAD_CHANNELS: 8
TRAIN:
  OPTIMIZER: adam
  LR: 0.002
  BATCH_SIZE_PER_GPU: 8
  END_EPOCH: 1
  INTRA_OP_THREADS: 1
${overrides.flipTest === undefined ? "" : `TEST:\n  FLIP_TEST: ${overrides.flipTest}\n`}QUANT:
  ENABLED: true
  CALIBRATION_SAMPLES: 6
  MAX_AP_DROP: 100
PUBLISH:
  MODEL_NAME: tiny-detector
`;
}

describe("a detector job", () => {
  let dir: { path: string; remove: () => Promise<void> };
  let harness: TrainerHarness;
  beforeAll(async () => {
    dir = await makeTempDir("poseloop-detector-");
    harness = await startTrainerHarness(nats.url, dir.path, { POSELOOP_PYTHON: "/bin/false" });
  });
  afterAll(async () => {
    await harness.close();
    await dir.remove();
  });

  it("trains, validates by box AP and publishes a DETECTOR version with its DetectorSpec and a gated int8 model", async () => {
    const { job } = await harness.client.startTraining({ source: { case: "experimentYaml", value: detectorYaml() } });
    const jobId = job?.jobId ?? "";
    const events = await jobEvents(harness.client, jobId, { skipProgress: true });
    const last = events.at(-1)?.event;
    expect(last?.case === "stateChanged" && last.value.to, JSON.stringify(last?.value)).toBe(JobState.SUCCEEDED);
    const validation = events.flatMap((e) => (e.event.case === "validation" ? [e.event.value] : []));
    expect(validation).toHaveLength(1);
    expect(validation[0]?.metrics?.numImages).toBe(6);
    const quantization = events.flatMap((e) => (e.event.case === "quantization" ? [e.event.value] : []));
    expect(quantization[0]?.passed).toBe(true);

    const manifest = events.flatMap((e) => (e.event.case === "published" ? [e.event.value.manifest] : []))[0];
    expect(manifest?.kind).toBe(ModelKind.DETECTOR);
    expect(manifest?.architecture).toBe("detector-lite");
    expect(manifest?.codec).toBeUndefined();
    expect(manifest?.keypointSchema).toBeUndefined();
    expect(manifest?.outputNames).toEqual(["centers", "sizes", "offsets"]);
    expect(manifest?.detector).toMatchObject({ head: DetectorHead.CENTERNET, numClasses: 1, personClass: 0, strides: [4], resize: ResizeMode.LETTERBOX, maxDetections: 100 });
    expect(manifest?.detector?.scoreThreshold).toBeCloseTo(0.3, 6);
    expect(manifest?.detector?.iouThreshold).toBeCloseTo(0.5, 6);
    // Box metrics of the synthetic validation pictures, int8 (served) and fp32.
    expect(manifest?.precision).toBe(Precision.INT8);
    expect(manifest?.metrics?.dataset).toBe("synthetic-detection/val");
    expect(manifest?.metrics?.numImages).toBe(6);
    expect(manifest?.metrics?.numInstances).toBeGreaterThanOrEqual(6);
    expect(manifest?.fp32Metrics?.numImages).toBe(6);
    for (const ap of [manifest?.metrics?.ap, manifest?.fp32Metrics?.ap]) expect(ap !== undefined && ap >= 0 && ap <= 1).toBe(true);

    const stored = await harness.registry.getManifest("tiny-detector", manifest?.model?.version ?? "");
    const int8 = stored.artifacts.find((a) => a.precision === Precision.INT8);
    expect(int8?.digest).toBe(stored.model?.digest);
    expect((await harness.registry.getArtifact(int8?.objectName ?? "", { expectedDigest: int8?.digest ?? "" })).byteLength).toBeGreaterThan(1000);

    // Evaluate measures the served int8 model as the gate did: the same box AP.
    const evaluated = await harness.client.evaluate({ model: { case: "version", value: { name: "tiny-detector", version: manifest?.model?.version ?? "" } } });
    expect(evaluated.metrics?.numImages).toBe(6);
    expect(evaluated.metrics?.ap).toBeCloseTo(manifest?.metrics?.ap ?? -1, 9);
  });

  it("that cannot run is refused at submission with every reason, never queued", async () => {
    const error = await harness.client.startTraining({ source: { case: "experimentYaml", value: detectorYaml({ pretrained: "backbone.pth", flipTest: true }) } }).catch((e: unknown) => e);
    expect(AppError.is(error, Code.INVALID_ARGUMENT)).toBe(true);
    const problems = (error as AppError).problems.join("\n");
    expect(problems).toMatch(/MODEL\.PRETRAINED.*detector/);
    expect(problems).toMatch(/TEST\.FLIP_TEST.*detector/);
    const { jobs } = await harness.client.listJobs({});
    expect(jobs).toHaveLength(1);
  });
});
