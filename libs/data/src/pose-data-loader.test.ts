import { join } from "node:path";
import { AppError, Code, createJsonLogger } from "@poseloop/core";
import { boxToCropRegion } from "@poseloop/pose";
import { makeTempDir } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HRNET_AUGMENTATION } from "./augmentation.js";
import { readCocoKeypoints, type CocoKeypointDataset } from "./coco-reader.js";
import { PoseDataLoader, type PoseDataLoaderOptions } from "./pose-data-loader.js";
import { generateSyntheticDataset } from "./synthetic-dataset.js";
import { INPUT, sameBytes, UDP_CODEC } from "./testing/pose-fixtures.js";
import type { PoseBatch } from "./top-down-batch.js";

async function collect(iterable: AsyncIterable<PoseBatch>): Promise<PoseBatch[]> {
  const batches: PoseBatch[] = [];
  for await (const batch of iterable) batches.push(batch);
  return batches;
}

function expectSameBatch(actual: PoseBatch, expected: PoseBatch): void {
  expect(actual.index).toBe(expected.index);
  expect(actual.samples).toEqual(expected.samples);
  expect(sameBytes(actual.images, expected.images)).toBe(true);
  expect(actual.targets).toHaveLength(expected.targets.length);
  actual.targets.forEach((target, i) => expect(sameBytes(target, expected.targets[i]!)).toBe(true));
  expect(sameBytes(actual.targetWeights, expected.targetWeights)).toBe(true);
}

describe("PoseDataLoader", () => {
  let temp: { path: string; remove: () => Promise<void> };
  let dataset: CocoKeypointDataset;
  const loaders: PoseDataLoader[] = [];
  const open = async (options: Partial<PoseDataLoaderOptions>): Promise<PoseDataLoader> => {
    const loader = await PoseDataLoader.create({ source: { instances: dataset.instances }, inputSize: INPUT, codec: UDP_CODEC, batchSize: 4, seed: 5, workers: 0, ...options });
    loaders.push(loader);
    return loader;
  };

  beforeAll(async () => {
    temp = await makeTempDir("poseloop-loader-");
    await generateSyntheticDataset({ dir: temp.path, split: "train", count: 14, width: 160, height: 200, seed: 3, minPeople: 1, maxPeople: 2 });
    dataset = await readCocoKeypoints({ dir: temp.path, split: "train" });
  });
  afterAll(async () => {
    await Promise.all(loaders.map((loader) => loader.close()));
    await temp.remove();
  });

  it("resumed at batch k, yields batches k..n identical to an uninterrupted pass, with 2 workers as in-thread", async () => {
    const augmentation = { ...HRNET_AUGMENTATION, occlusionProb: 0.5, colorJitter: 0.2 };
    const parallel = await open({ workers: 2, augmentation });
    expect(parallel.batchesPerEpoch).toBe(Math.floor(dataset.instances.length / 4));
    expect(parallel.batchesPerEpoch).toBeGreaterThanOrEqual(4);
    const full = await collect(parallel.epoch(2));
    const resumed = await collect(parallel.epoch(2, { startBatch: 3 }));
    expect(full.map((batch) => batch.index)).toEqual([...Array(parallel.batchesPerEpoch).keys()]);
    expect(resumed).toHaveLength(full.length - 3);
    resumed.forEach((batch, i) => expectSameBatch(batch, full[i + 3]!));

    const inThread = await open({ workers: 0, augmentation });
    const again = await collect(inThread.epoch(2));
    again.forEach((batch, i) => expectSameBatch(batch, full[i]!));
    const next = await collect(parallel.epoch(3));
    expect(sameBytes(next[0]!.images, full[0]!.images)).toBe(false);
  });

  it("shuffles each epoch differently and visits each sample at most once", async () => {
    const loader = await open({});
    const order = async (epoch: number) => (await collect(loader.epoch(epoch))).flatMap((batch) => batch.samples.map((s) => s.sampleIndex));
    const [first, second] = [await order(0), await order(1)];
    expect(first).toHaveLength(loader.batchesPerEpoch * 4);
    expect(new Set(first).size).toBe(first.length);
    expect(second).not.toEqual(first);
    expect(await order(0)).toEqual(first);
  });

  it("validates in source order without augmentation, keeping the last partial batch and the crop regions", async () => {
    const loader = await open({ mode: "validation", batchSize: 5 });
    const batches = await collect(loader.epoch(0));
    const n = dataset.instances.length;
    expect(batches).toHaveLength(Math.ceil(n / 5));
    expect(batches.at(-1)!.size).toBe(n % 5 === 0 ? 5 : n % 5);
    const samples = batches.flatMap((batch) => batch.samples);
    expect(samples.map((s) => s.sampleIndex)).toEqual([...Array(n).keys()]);
    samples.forEach((sample, i) => {
      expect(sample.region).toEqual(boxToCropRegion(dataset.instances[i]!.bbox, INPUT));
      expect(sample.flipped).toBe(false);
    });
    expect(batches[0]!.targets[0]).toHaveLength(5 * 17 * 64 * 48);

    const boxes = await open({ mode: "validation", source: { boxes: dataset.groundTruthBoxes }, batchSize: 8 });
    const boxBatches = await collect(boxes.epoch(0));
    expect(boxBatches.reduce((sum, batch) => sum + batch.size, 0)).toBe(n);
    expect(boxBatches[0]!.targets).toEqual([]);
    expect(boxBatches[0]!.samples[0]!.annotationId).toBeUndefined();
  });

  it("fails the epoch with the worker's error naming the image, or skips and counts bad samples", async () => {
    const instances = dataset.instances.map((instance, i) => (i === 6 ? { ...instance, imagePath: join(temp.path, "train", "gone.jpg") } : instance));
    const failing = await open({ source: { instances }, workers: 2, shuffle: false });
    const error: unknown = await collect(failing.epoch(0)).catch((e: unknown) => e);
    expect(AppError.is(error, Code.NOT_FOUND)).toBe(true);
    expect((error as AppError).message).toBe(`image ${instances[6]!.imageId} (train/gone.jpg) not found`);
    // The loader stays usable: the epoch fails the same way again, and batches after the bad one load.
    expect(await collect(failing.epoch(0, { startBatch: 0 })).catch(() => "failed again")).toBe("failed again");
    expect((await collect(failing.epoch(1, { startBatch: 2 }))).length).toBe(failing.batchesPerEpoch - 2);

    const lines: string[] = [];
    const skipping = await open({ source: { instances }, workers: 2, shuffle: false, badSamples: "skip", logger: createJsonLogger({ level: "warn", write: (line) => lines.push(line) }) });
    const batches = await collect(skipping.epoch(0));
    expect(batches).toHaveLength(skipping.batchesPerEpoch);
    expect(skipping.skippedSamples).toBe(1);
    expect(batches[1]!.skipped).toEqual([{ sampleIndex: 6, imageId: instances[6]!.imageId, code: Code.NOT_FOUND, message: `image ${instances[6]!.imageId} (train/gone.jpg) not found` }]);
    expect(batches[1]!.targetWeights.subarray(2 * 17, 3 * 17).every((w) => w === 0)).toBe(true);
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: "warn", msg: "skipped a bad sample", code: "NOT_FOUND", sample: 6 });
  });

  it("stops an epoch on abort, refuses a second epoch at once, and ends everything on close", async () => {
    const loader = await PoseDataLoader.create({ source: { instances: dataset.instances }, inputSize: INPUT, codec: UDP_CODEC, batchSize: 4, workers: 2 });
    const controller = new AbortController();
    const seen: number[] = [];
    const aborted: unknown = await (async () => {
      for await (const batch of loader.epoch(0, { signal: controller.signal })) {
        seen.push(batch.index);
        controller.abort();
      }
    })().catch((e: unknown) => e);
    expect(AppError.is(aborted, Code.CANCELLED)).toBe(true);
    expect(seen).toEqual([0]);

    const first = loader.epoch(1);
    await first.next();
    const second: unknown = await loader.epoch(1).next().catch((e: unknown) => e);
    expect(AppError.is(second, Code.FAILED_PRECONDITION)).toBe(true);
    const closing = first
      .next()
      .then(() => first.next())
      .catch((e: unknown) => e);
    await loader.close();
    const closed: unknown = await closing;
    expect(AppError.is(closed, Code.CANCELLED)).toBe(true);
    const after: unknown = await loader.epoch(2).next().catch((e: unknown) => e);
    expect(AppError.is(after, Code.FAILED_PRECONDITION)).toBe(true);
    await loader.close();
  });

  it("fails a batch past its deadline instead of waiting, and replaces the worker", async () => {
    const loader = await open({ workers: 1, batchTimeoutMs: 1 });
    for (const epoch of [0, 1]) {
      const error: unknown = await collect(loader.epoch(epoch)).catch((e: unknown) => e);
      expect(AppError.is(error, Code.DEADLINE_EXCEEDED)).toBe(true);
      expect((error as AppError).message).toBe(`building batch 0 of epoch ${epoch} did not finish within 1 ms`);
    }
  });

  it("closes when its signal aborts", async () => {
    const controller = new AbortController();
    const loader = await open({ workers: 1, signal: controller.signal });
    controller.abort();
    await expect(collect(loader.epoch(0))).rejects.toMatchObject({ code: Code.FAILED_PRECONDITION });
  });

  it("reports every invalid option at once", async () => {
    const error: unknown = await PoseDataLoader.create({
      source: { boxes: dataset.groundTruthBoxes },
      inputSize: { width: 100, height: 256 },
      codec: UDP_CODEC,
      batchSize: 0,
      workers: -1,
      augmentation: { rotationFactor: 500 },
      badSamples: "ignore" as "skip",
    }).catch((e: unknown) => e);
    expect(AppError.is(error, Code.INVALID_ARGUMENT)).toBe(true);
    expect((error as AppError).problems).toEqual([
      "validation boxes (no keypoints) can only be loaded in validation mode",
      "the codec's input size 192x256 differs from inputSize 100x256",
      "batchSize must be a positive integer, got 0",
      "augmentation.rotationFactor must be in [0, 90] degrees, got 500",
      "workers must be an integer from 0 to 64, got -1",
      'badSamples must be "fail" or "skip", got ignore',
    ]);
  });
});
