/**
 * int8 against fp32 inference latency for the zoo models, one run: the same weights exported in fp32 and
 * quantized by libs/quant (MinMax, U8S8, per-channel weights), batch 1 and 8, plus file sizes. Latency does not
 * depend on the weight values, so models are freshly initialized; the AP drop of a trained model is measured by
 * the trainer's quantization gate.
 */
import { cpus } from "node:os";
import * as ort from "onnxruntime-node";
import { encodeModel } from "@poseloop/onnx";
import { quantizeModel } from "@poseloop/quant";
import { buildInferenceModel, defineModel, initialize, Rng, type ModelConfig } from "@poseloop/train";
import { compareMs, fmt, printTable } from "./harness.js";

const CASES: readonly { label: string; model: ModelConfig }[] = [
  { label: "lite 64x48", model: { architecture: "lite", inputWidth: 48, inputHeight: 64, numKeypoints: 17 } },
  { label: "lite 256x192", model: { architecture: "lite", inputWidth: 192, inputHeight: 256, numKeypoints: 17 } },
  { label: "SimpleBaseline-R18 256x192", model: { architecture: "simplebaseline", inputWidth: 192, inputHeight: 256, numKeypoints: 17, simpleBaseline: { depth: 18 } } },
  { label: "HRNet-W32 256x192", model: { architecture: "hrnet", inputWidth: 192, inputHeight: 256, numKeypoints: 17, hrnet: { width: 32 } } },
];

export async function run(): Promise<void> {
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
    // Runs alternate between the two sessions: without this, the idle session's pool threads spin-wait after
    // each run and take cores from the other's run (on 2 cores, int8 lite at batch 8 measured 24 ms instead of 9).
    const options: ort.InferenceSession.SessionOptions = { graphOptimizationLevel: "all", intraOpNumThreads: cpus().length, extra: { session: { intra_op: { allow_spinning: "0" } } } };
    const [a, b] = await Promise.all([ort.InferenceSession.create(fp32Bytes, options), ort.InferenceSession.create(quantized.bytes, options)]);
    for (const batch of [1, 8]) {
      const feed = { input: image(batch) };
      const reps = batch === 1 ? 30 : 15;
      const [fp32Ms, int8Ms] = await compareMs(reps, () => a.run(feed), () => b.run(feed));
      rows.push([c.label, String(batch), fmt(fp32Ms, 1), fmt(int8Ms, 1), fmt(fp32Ms / int8Ms), batch === 1 ? fmt(quantized.bytes.byteLength / fp32Bytes.byteLength) : ""]);
    }
    await Promise.all([a.release(), b.release()]);
  }
  printTable(
    `int8 (QDQ, fused by onnxruntime) against fp32, onnxruntime CPU, ${cpus().length} threads, medians`,
    ["model", "batch", "fp32 ms", "int8 ms", "speed-up", "int8/fp32 size"],
    rows,
  );
}
