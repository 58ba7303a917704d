/**
 * The two data loaders a PyTorch job can use (TRAIN.DATA_LOADER): samples/s of the PyTorch engine's own loader
 * (poseloop_torch.data, torch.utils.data worker processes, bench/engine_data_loader.py) against libs/data's
 * PoseDataLoader (the trainer's worker threads), the same batches of the same synthetic dataset in the same run:
 * HRNet's augmentation (flip, rotation, scale, half body) plus occlusion and colour jitter at 256x192 (heatmaps
 * 64x48, UDP targets), batch 32, with 1 and 2 workers each, decoded images kept in each worker's memory. Each
 * loader runs alone with the whole machine, warm (one epoch first, so every worker has decoded its images), and
 * both at their defaults otherwise. The engine's loader also pays its workers' start (spawned interpreters
 * importing torch), shown apart. A ratio above 1 means the engine's loader is faster.
 */
import { spawn } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { cpus } from "node:os";
import { join } from "node:path";
import { HRNET_AUGMENTATION, PoseBatchPlan, type PoseDataLoaderOptions } from "@poseloop/data";
import { engineDataRequest } from "@poseloop/trainer";
import { makeTempDir } from "@poseloop/testkit";
import { poseLoaderRate } from "./data.js";
import { fmt, printTable, syntheticTrainSet } from "./harness.js";

const PYTHON = process.env["POSELOOP_PYTHON"] ?? "/usr/bin/python3";
const BATCH = 32;
const K = 17;
const WARM_UP = 1;
const TIMED = 2;

async function engineRate(options: PoseDataLoaderOptions, dir: string): Promise<{ samplesPerSecond: number; firstBatchSeconds: number }> {
  const plan = PoseBatchPlan.create(options);
  const plans = (from: number, count: number) =>
    Array.from({ length: count }, (_, i) => ({ epoch: from + i, batches: plan.requests(from + i).map((r) => [r.index, Array.from(r.samples)]) }));
  const { config } = engineDataRequest(plan.config, { workers: 0, prefetch: 2, roots: { dataRoot: dir, workDir: dir } }) as { config: Record<string, unknown> };
  const file = join(dir, `engine-data-${options.workers}.json`);
  await writeFile(file, JSON.stringify({ config, workers: options.workers, prefetch: 2, warmUp: plans(0, WARM_UP), timed: plans(WARM_UP, TIMED) }));
  const output = await new Promise<string>((resolve, reject) => {
    const child = spawn(PYTHON, [join(import.meta.dirname, "engine_data_loader.py"), file], { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, POSELOOP_DATA_ROOT: dir } });
    let text = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (text += chunk));
    child.once("error", reject);
    child.once("close", (code) => (code === 0 ? resolve(text) : reject(new Error(`engine_data_loader.py exited with ${code}`))));
  });
  return JSON.parse(output.trim().split("\n").at(-1) ?? "{}") as { samplesPerSecond: number; firstBatchSeconds: number };
}

export async function run(): Promise<void> {
  const dir = await makeTempDir("poseloop-bench-engine-data-");
  const rows: string[][] = [];
  let count = 0;
  try {
    const { instances } = await syntheticTrainSet(dir.path, 160);
    count = instances.length;
    const input = { width: 192, height: 256 };
    for (const workers of [1, 2]) {
      const options: PoseDataLoaderOptions = {
        source: { instances },
        inputSize: input,
        codec: { kind: "heatmap", inputSize: input, heatmapSize: { width: 48, height: 64 }, numKeypoints: K, sigma: 2, unbiased: true },
        batchSize: BATCH,
        seed: 1,
        augmentation: { ...HRNET_AUGMENTATION, occlusionProb: 0.3, colorJitter: 0.3 },
        workers,
      };
      const trainer = await poseLoaderRate(options, WARM_UP, TIMED);
      const engine = await engineRate(options, dir.path);
      rows.push([String(workers), fmt(trainer, 0), fmt(engine.samplesPerSecond, 0), fmt(engine.samplesPerSecond / trainer), fmt(engine.firstBatchSeconds, 1)]);
    }
  } finally {
    await dir.remove();
  }
  printTable(
    `training samples/s, batch ${BATCH}: the PyTorch engine's loader (worker processes) vs libs/data's (worker threads); 256x192, UDP targets, HRNet augmentation + occlusion 0.3 + colour jitter 0.3; ${count} instances of 160 synthetic 320x240 JPEGs; ${cpus().length} cores`,
    ["workers", "trainer loader samples/s", "engine loader samples/s", "engine / trainer", "engine: start to first batch (s)"],
    rows,
  );
}
