/**
 * int8 against fp32 inference latency for the zoo models, one run: the same weights exported in fp32 and
 * quantized by libs/quant (MinMax, S8S8, per-channel weights), batch 1 and 8, plus file sizes. Latency does not
 * depend on the weight values, so models are freshly initialized; the AP drop of a trained model is measured by
 * the trainer's quantization gate.
 *
 * Two thread settings: one intra-op thread per session, which is how the inferencer serves (one session per
 * worker, POSELOOP_INTRA_OP_THREADS=1 by default), and every core in one session.
 */
import { cpus } from "node:os";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import * as ort from "onnxruntime-node";
import { encodeModel } from "@poseloop/onnx";
import { quantizeModel } from "@poseloop/quant";
import { buildInferenceModel, defineModel, initialize, Rng, type ModelConfig } from "@poseloop/train";
import { fmt, median, printTable, timeMs } from "./harness.js";

const CASES: readonly { label: string; model: ModelConfig }[] = [
  { label: "lite 64x48", model: { architecture: "lite", inputWidth: 48, inputHeight: 64, numKeypoints: 17 } },
  { label: "lite 128x96, 4 widths (demo)", model: { architecture: "lite", inputWidth: 96, inputHeight: 128, numKeypoints: 17, lite: { channels: [16, 32, 64, 128], blocksPerStage: 2, heatmapStride: 2 } } },
  { label: "lite 256x192", model: { architecture: "lite", inputWidth: 192, inputHeight: 256, numKeypoints: 17 } },
  { label: "SimpleBaseline-R18 256x192", model: { architecture: "simplebaseline", inputWidth: 192, inputHeight: 256, numKeypoints: 17, simpleBaseline: { depth: 18 } } },
  { label: "HRNet-W32 256x192", model: { architecture: "hrnet", inputWidth: 192, inputHeight: 256, numKeypoints: 17, hrnet: { width: 32 } } },
];

/**
 * Rounds per model and setting; a round is a block of fp32 runs then a block of int8 runs, each block in a
 * fresh session. The speed-up is the median over rounds of the two blocks' median ratio: this machine's speed
 * drifts by tens of percent over minutes, so only runs close in time are compared.
 */
const ROUNDS = 5;

setFlagsFromString("--expose-gc");
const collectGarbage = runInNewContext("gc") as () => void;

/**
 * Median run time of `bytes` over ROUNDS blocks, each in its own session. Only one session exists at a time:
 * an idle session's pool threads spin after its runs and would take a core from the other one. The run time
 * of an int8 session measured here depends on the session (on this machine lite 256x192 at batch 8 gave
 * about 9 ms in some sessions and 14 ms in others, fp32 19-20 ms in all), so one session is not a measurement.
 * Garbage is collected before each block so that the quantizer's leftovers are not swept during the timing.
 */
async function blockTimes(bytes: Uint8Array, threads: number, feed: Record<string, ort.Tensor>, reps: number): Promise<number[]> {
  collectGarbage();
  const session = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: "all", intraOpNumThreads: threads });
  try {
    for (let i = 0; i < 3; i++) await session.run(feed);
    const times: number[] = [];
    for (let i = 0; i < reps; i++) times.push(await timeMs(() => session.run(feed)));
    return times;
  } finally {
    await session.release();
  }
}

export async function run(): Promise<void> {
  const threadSettings = [...new Set([1, cpus().length])];
  const rows: string[][] = [];
  for (const c of CASES) {
    const definition = defineModel(c.model);
    const rng = new Rng(1);
    const fp32 = buildInferenceModel(definition, {
      params: new Map(definition.registry.params.map((s) => [s.name, initialize(s.init.kind === "normal" ? { ...s, init: { kind: "normal", std: 0.05 } } : s, rng)])),
      buffers: new Map(definition.registry.buffers.map((s) => [s.name, initialize(s, rng)])),
    });
    const { inputWidth: w, inputHeight: h } = c.model;
    const image = (n: number) => new ort.Tensor("float32", Float32Array.from({ length: n * 3 * h * w }, () => rng.normal()), [n, 3, h, w]);
    const quantized = await quantizeModel(fp32, [1, 2, 3, 4].map(() => ({ input: image(1) })), { skipSqnr: true });
    const fp32Bytes = encodeModel(fp32);
    for (const threads of threadSettings) {
      for (const batch of [1, 8]) {
        const feed = { input: image(batch) };
        const runsPerBlock = c.model.architecture === "lite" ? (batch === 1 ? 40 : 15) : batch === 1 ? 8 : 3;
        const fp32Ms: number[] = [];
        const int8Ms: number[] = [];
        const ratios: number[] = [];
        for (let round = 0; round < ROUNDS; round++) {
          fp32Ms.push(median(await blockTimes(fp32Bytes, threads, feed, runsPerBlock)));
          int8Ms.push(median(await blockTimes(quantized.bytes, threads, feed, runsPerBlock)));
          ratios.push(fp32Ms[round]! / int8Ms[round]!);
        }
        const spread = `${fmt(Math.min(...ratios))}-${fmt(Math.max(...ratios))}`;
        rows.push([c.label, String(threads), String(batch), fmt(median(fp32Ms), 2), fmt(median(int8Ms), 2), fmt(median(ratios)), spread, rows.some((r) => r[0] === c.label) ? "" : fmt(quantized.bytes.byteLength / fp32Bytes.byteLength, 3)]);
      }
    }
  }
  printTable(
    `int8 (QDQ, fused by onnxruntime) against fp32, onnxruntime CPU, medians of ${ROUNDS} rounds of fresh sessions (1 thread: how the inferencer serves)`,
    ["model", "threads", "batch", "fp32 ms", "int8 ms", "speed-up", "round range", "int8/fp32 size"],
    rows,
  );
}
