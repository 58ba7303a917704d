/**
 * Data-loader throughput: samples/s of PoseDataLoader in training mode (HRNet's augmentation: flip, rotation,
 * scale, half body) with 1 and 2 worker threads, at the lite model's input (64x48, heatmaps 16x12) and at
 * 256x192 (heatmaps 64x48), on a synthetic dataset generated for the run; once with the decoded images warm
 * in the workers' memory, once from the disk cache of decoded RGB (memoryBytes 0) and once decoding every
 * JPEG (memoryBytes 0, no disk cache: what a dataset larger than memory costs). The peer is the lite model's training consumption in the same run (StepEngine, batch 32, 64x48):
 * a ratio above 1 means the loader keeps that step fed. Both are measured alone, each with the whole machine.
 */
import { cpus } from "node:os";
import { join } from "node:path";
import { HRNET_AUGMENTATION, PoseDataLoader, type ImageCacheOptions, type PoseDataLoaderOptions, type PoseInstance } from "@poseloop/data";
import { Rng, StepEngine } from "@poseloop/train";
import { makeTempDir } from "@poseloop/testkit";
import { fmt, printTable, syntheticTrainSet, timeMs } from "./harness.js";

const BATCH = 32;
const K = 17;
const EPOCHS = 3;

interface Case {
  readonly label: string;
  readonly input: { width: number; height: number };
  readonly heatmap: { width: number; height: number };
  readonly sigma: number;
}

const CASES: readonly Case[] = [
  { label: "lite 64x48 (16x12)", input: { width: 48, height: 64 }, heatmap: { width: 12, height: 16 }, sigma: 1 },
  { label: "256x192 (64x48)", input: { width: 192, height: 256 }, heatmap: { width: 48, height: 64 }, sigma: 2 },
];

/**
 * Samples per second over EPOCHS epochs after warm-up epochs (workers started, JIT warm). Each worker caches
 * the images of the batches it built, so with images in memory three warm-up epochs let every worker see
 * nearly every image (the first misses a quarter of them with two workers).
 */
async function loaderRate(instances: readonly PoseInstance[], c: Case, workers: number, imageCache: ImageCacheOptions): Promise<number> {
  const options: PoseDataLoaderOptions = {
    source: { instances },
    inputSize: c.input,
    codec: { kind: "heatmap", inputSize: c.input, heatmapSize: c.heatmap, numKeypoints: K, sigma: c.sigma },
    batchSize: BATCH,
    seed: 1,
    augmentation: HRNET_AUGMENTATION,
    workers,
    imageCache,
  };
  return poseLoaderRate(options, imageCache.memoryBytes === 0 ? 1 : 3, EPOCHS);
}

/** Samples/s of a PoseDataLoader over `epochs` epochs after `warmUp` untimed ones (workers started, caches filled). */
export async function poseLoaderRate(options: PoseDataLoaderOptions, warmUp: number, epochs: number): Promise<number> {
  const loader = await PoseDataLoader.create(options);
  try {
    for (let epoch = 0; epoch < warmUp; epoch++) for await (const _batch of loader.epoch(epoch));
    let samples = 0;
    const ms = await timeMs(async () => {
      for (let epoch = warmUp; epoch < warmUp + epochs; epoch++) for await (const batch of loader.epoch(epoch)) samples += batch.size;
    });
    return (samples * 1000) / ms;
  } finally {
    await loader.close();
  }
}

/** The lite model's training speed at 64x48, batch 32: median of 5 steps after a warm-up. */
async function consumptionRate(): Promise<number> {
  const engine = await StepEngine.create({
    model: { architecture: "lite", inputWidth: 48, inputHeight: 64, numKeypoints: K },
    training: { batchSize: BATCH, optimizer: { kind: "adam" } },
    seed: 1,
  });
  try {
    const rng = new Rng(2);
    const batch = {
      images: Float32Array.from({ length: BATCH * 3 * 64 * 48 }, () => rng.normal()),
      targets: Float32Array.from({ length: BATCH * K * 16 * 12 }, () => rng.uniform()),
      targetWeights: new Float32Array(BATCH * K).fill(1),
    };
    await engine.run(batch, 1e-3);
    const times: number[] = [];
    for (let i = 0; i < 5; i++) times.push(await timeMs(() => engine.run(batch, 1e-3)));
    const median = times.sort((a, b) => a - b)[2]!;
    return (BATCH * 1000) / median;
  } finally {
    await engine.release();
  }
}

export async function run(): Promise<void> {
  const dir = await makeTempDir("poseloop-bench-data-");
  const rows: string[][] = [];
  let count = 0;
  try {
    const { instances } = await syntheticTrainSet(dir.path, 160);
    count = instances.length;
    const consumption = await consumptionRate();
    for (const c of CASES) {
      for (const workers of [1, 2]) {
        const memory = await loaderRate(instances, c, workers, {});
        const disk = await loaderRate(instances, c, workers, { memoryBytes: 0, diskDir: join(dir.path, "cache") });
        const decoding = await loaderRate(instances, c, workers, { memoryBytes: 0 });
        rows.push([c.label, String(workers), ...[memory, disk, decoding].map((rate) => fmt(rate, 0)), fmt(consumption, 0), ...[memory, disk, decoding].map((rate) => fmt(rate / consumption))]);
      }
    }
  } finally {
    await dir.remove();
  }
  printTable(
    `data loader samples/s, train mode with HRNet augmentation, batch ${BATCH}, ${count} instances of 160 synthetic 320x240 JPEGs, ${cpus().length} cores; peer: lite 64x48 training step samples/s (StepEngine CPU, batch ${BATCH}); ratio = loader/step`,
    ["input (heatmap)", "workers", "loader/s memory", "loader/s disk cache", "loader/s decode", "lite step/s", "ratio memory", "ratio disk", "ratio decode"],
    rows,
  );
}
