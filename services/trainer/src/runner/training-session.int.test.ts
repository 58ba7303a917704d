import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { AppError, Code } from "@poseloop/core";
import { KeypointMetricsSchema } from "@poseloop/proto/poseloop/common/v1/metrics_pb";
import { TrainConfigSchema } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { GetJobResultsResponseSchema } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { makeTempDir } from "@poseloop/testkit";
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeTrainingState } from "@poseloop/train";
import { decodeCheckpoint } from "./checkpoint-file.js";
import { TrainingSession } from "./training-session.js";
import { tinyTrainConfig } from "../testing/tiny-config.js";

describe("TrainingSession", () => {
  let dir: { path: string; remove: () => Promise<void> };
  beforeAll(async () => {
    dir = await makeTempDir("poseloop-run-");
  });
  afterAll(async () => dir.remove());

  const config = tinyTrainConfig();
  const init = () => ({ jobId: "job-1", config: toBinary(TrainConfigSchema, config), roots: { dataRoot: dir.path, workDir: dir.path } });

  it("trains epochs in chunks, validates through the serving pipeline, and resumes from a mid-epoch checkpoint bit for bit", async () => {
    const session = await TrainingSession.start(init());
    let midEpoch: Uint8Array | undefined;
    try {
      expect(session.position).toMatchObject({ epoch: 0, nextBatch: 0, step: 0, batchesPerEpoch: expect.any(Number) as number });
      const perEpoch = session.position.batchesPerEpoch;
      expect(perEpoch).toBeGreaterThanOrEqual(4);
      const first = await session.train(2);
      expect(first.steps).toBe(2);
      expect(first.epochEnded).toBe(false);
      expect(Number.isFinite(first.loss)).toBe(true);
      midEpoch = (await session.checkpoint()).bytes;
      expect(decodeCheckpoint(midEpoch).header).toMatchObject({ epoch: 0, nextBatch: 2, step: 2 });
      while (!(await session.train(100)).epochEnded);
      const validation = await session.validate();
      const metrics = fromBinary(KeypointMetricsSchema, validation.metrics);
      expect(metrics.numImages).toBe(8);
      expect(metrics.ap).toBeGreaterThanOrEqual(0);
      expect(validation.isBest).toBe(true);
      while (!(await session.train(100)).epochEnded);
      expect(session.position.epoch).toBe(2);
      const finalWritten = await session.checkpoint();
      const final = decodeCheckpoint(finalWritten.bytes);

      const resumed = await TrainingSession.start({ ...init(), checkpoint: midEpoch });
      try {
        expect(resumed.position).toMatchObject({ epoch: 0, nextBatch: 2, step: 2 });
        while (!(await resumed.train(100)).epochEnded);
        await resumed.validate();
        while (!(await resumed.train(100)).epochEnded);
        const againWritten = await resumed.checkpoint();
        const again = decodeCheckpoint(againWritten.bytes);
        expect(again.header.step).toBe(final.header.step);
        expect(Buffer.compare(Buffer.from(again.state), Buffer.from(final.state))).toBe(0);
        // The resumed run continues the curves it was checkpointed with: results.csv as an uninterrupted run's,
        // but for the timings.
        const csv = (bytes: Uint8Array) => {
          const { header, rows } = ((text: string) => {
            const [head = "", ...lines] = text.trimEnd().split("\n");
            return { header: head.split(","), rows: lines.map((line) => line.split(",")) };
          })(fromBinary(GetJobResultsResponseSchema, bytes).csv);
          const timings = new Set(["train_s", "val_s", "samples_per_s"]);
          return rows.map((row) => row.filter((_, i) => !timings.has(header[i] ?? "")));
        };
        const uninterrupted = csv(finalWritten.results);
        expect(uninterrupted).toHaveLength(2);
        expect(uninterrupted[0]?.[4]).not.toBe("");
        expect(csv(againWritten.results)).toEqual(uninterrupted);
        expect(again.header.results?.steps).toEqual(final.header.results?.steps);
      } finally {
        await resumed.close();
      }
    } finally {
      await session.close();
    }
  });

  it("resumes a checkpoint to a later END_EPOCH at another LR, and refuses one whose MODEL.IMAGE_SIZE differs, naming it", async () => {
    const session = await TrainingSession.start(init());
    let checkpoint: Uint8Array;
    try {
      while (!(await session.train(100)).epochEnded);
      checkpoint = (await session.checkpoint()).bytes;
    } finally {
      await session.close();
    }
    const resume = (overrides: Parameters<typeof tinyTrainConfig>[0]) => TrainingSession.start({ ...init(), config: toBinary(TrainConfigSchema, tinyTrainConfig(overrides)), checkpoint });

    const larger = { architecture: 1, inputSize: { width: 96, height: 128 }, extra: { case: "lite" as const, value: { channels: [8, 16, 32] } } };
    const refused: unknown = await resume({ model: larger }).then(
      async (s) => s.close(),
      (error: unknown) => error,
    );
    expect(AppError.is(refused, Code.FAILED_PRECONDITION)).toBe(true);
    expect((refused as AppError).message).toMatch(/^cannot resume job job-1: MODEL\.IMAGE_SIZE differs from its checkpoint \(\[48, 64\] there, \[96, 128\] now\)/);

    const longer = await resume({ endEpoch: 3, optimizer: { kind: 2, lr: 5e-4 } });
    try {
      expect(longer.position).toMatchObject({ epoch: 1, nextBatch: 0, endEpoch: 3 });
      let lr = 0;
      while (longer.position.epoch < 3) lr = (await longer.train(100)).lr;
      expect(longer.position.epoch).toBe(3);
      // The new LR, through the same schedule (factor 0.5 from epoch 1).
      expect(lr).toBeCloseTo(2.5e-4, 10);
    } finally {
      await longer.close();
    }
  });

  it("with TRAIN.REPLICAS trains each loader batch as shards in parallel, exactly as accumulation over them", async () => {
    const start = (overrides: Parameters<typeof tinyTrainConfig>[0]) =>
      TrainingSession.start({ ...init(), jobId: `job-${JSON.stringify(overrides).length}`, config: toBinary(TrainConfigSchema, tinyTrainConfig(overrides)) });
    const replicated = await start({ batchSize: 5, replicas: 2 });
    const accumulated = await start({ batchSize: 5, gradAccumSteps: 2 });
    try {
      expect(replicated.position.batchesPerEpoch).toBe(accumulated.position.batchesPerEpoch / 2);
      const chunk = await replicated.train(100);
      expect(chunk).toMatchObject({ epochEnded: true, batches: replicated.position.batchesPerEpoch, steps: chunk.batches, samples: chunk.batches * 10 });
      while (!(await accumulated.train(100)).epochEnded);
      expect(replicated.position.step).toBe(accumulated.position.step);
      const [a, b] = [decodeCheckpoint((await replicated.checkpoint()).bytes), decodeCheckpoint((await accumulated.checkpoint()).bytes)];
      // Same weights and optimizer state; the BatchNorm running statistics differ (shard 0's only, as in DDP),
      // and only accumulation keeps gradient accumulators.
      const weights = (state: Uint8Array) => [...decodeTrainingState(state).tensors].filter(([name]) => name.startsWith("param:") || name.startsWith("slot:"));
      const [wa, wb] = [weights(a.state), weights(b.state)];
      expect(wa.length).toBeGreaterThan(0);
      expect(wa.map(([name]) => name)).toEqual(wb.map(([name]) => name));
      expect(wa.every(([, data], i) => Buffer.from(data.buffer).equals(Buffer.from((wb[i] as [string, Float32Array])[1].buffer)))).toBe(true);
    } finally {
      await Promise.all([replicated.close(), accumulated.close()]);
    }
  });

  it("exports fp32 and an int8 model that passed the gate, both runnable, with their metrics", async () => {
    const session = await TrainingSession.start(init());
    try {
      await session.train(3);
      const exported = await session.export();
      expect(exported.int8).toBeDefined();
      expect(exported.gate?.passed).toBe(true);
      expect(exported.sizes.int8).toBeLessThan(exported.sizes.fp32);
      for (const bytes of [exported.fp32, exported.int8 as Uint8Array]) {
        const s = await ort.InferenceSession.create(bytes);
        const out = await s.run({ input: new ort.Tensor("float32", new Float32Array(3 * 64 * 48), [1, 3, 64, 48]) });
        expect(out.heatmaps?.dims).toEqual([1, 17, 16, 12]);
        await s.release();
      }
      expect(fromBinary(KeypointMetricsSchema, exported.fp32Metrics).numImages).toBe(8);
    } finally {
      await session.close();
    }
  });

  it("reports weights that an epoch's last update made non-finite, though that step's loss was still finite", async () => {
    // One batch per epoch and an LR past float32's range: the first step's loss is finite (the initial
    // weights), its update is not.
    const diverging = tinyTrainConfig({
      data: { kind: 2, synthetic: { trainImages: 8, valImages: 8, imageWidth: 128, imageHeight: 96, maxPeople: 2, seed: 5n }, name: "tiny-diverging" },
      optimizer: { kind: 1, lr: 1e39 },
    });
    const session = await TrainingSession.start({ ...init(), jobId: "job-diverging", config: toBinary(TrainConfigSchema, diverging) });
    try {
      expect(session.position.batchesPerEpoch).toBe(1);
      const chunk = await session.train(100);
      expect(chunk.epochEnded).toBe(true);
      expect(Number.isFinite(chunk.loss)).toBe(true);
      expect(chunk.nonFinite).toBe(true);
      expect(chunk.nonFiniteAt).toEqual({ what: "weights", step: 1 });
    } finally {
      await session.close();
    }
  });

  it("stops at a step boundary when cancelled", async () => {
    const session = await TrainingSession.start(init());
    try {
      session.cancel();
      const chunk = await session.train(100);
      expect(chunk.cancelled).toBe(true);
      expect(chunk.steps).toBe(0);
    } finally {
      await session.close();
    }
  });
});
