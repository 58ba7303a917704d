/**
 * Prepares what bench/gpu/check.py needs on a GPU machine that has Python and PyTorch but no Node: a synthetic
 * COCO keypoint dataset (JPEGs) and the PyTorch engine's `data` request for it, exactly as the trainer would send
 * it (TRAIN.DATA_LOADER engine), with image paths relative to the data root. The check builds every batch itself
 * with the engine's own loader code, so nothing else has to travel.
 *
 * Usage: `npm run gpu-check:prepare [-- <dir>]` (default `.gpu-check`, ignored by git); then on the GPU machine
 * `bash bench/gpu/run.sh .gpu-check <report dir>`.
 */
import { writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { HRNET_AUGMENTATION, PoseBatchPlan } from "@poseloop/data";
import { engineDataRequest } from "@poseloop/trainer";
import { syntheticTrainSet } from "../harness.js";

const K = 17;
/** HRNet-W32 256x192's input and heatmap, UDP targets: the configuration the GPU benchmark times. */
const INPUT = { width: 192, height: 256 };
const HEATMAP = { width: 48, height: 64 };

const dir = resolve(process.argv[2] ?? ".gpu-check");
// 400 scenes of 1-3 people: ~800 instances, enough for 25 distinct batches of 32 with no repeat in an epoch.
const { images, instances } = await syntheticTrainSet(dir, 400);
const plan = PoseBatchPlan.create({
  source: { instances },
  inputSize: INPUT,
  codec: { kind: "heatmap", inputSize: INPUT, heatmapSize: HEATMAP, numKeypoints: K, sigma: 2, unbiased: true },
  batchSize: 32,
  seed: 1,
  augmentation: { ...HRNET_AUGMENTATION, occlusionProb: 0.3, colorJitter: 0.3 },
  workers: 1,
});
const request = engineDataRequest(plan.config, { workers: 1, prefetch: 2, roots: { dataRoot: dir, workDir: dir } });
await writeFile(join(dir, "data-request.json"), JSON.stringify({ config: request["config"], instances: instances.length }));
process.stdout.write(`wrote ${images} images, ${instances.length} instances and data-request.json to ${dir}\n`);
