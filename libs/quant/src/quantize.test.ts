import { readFileSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as ort from "onnxruntime-node";
import { create } from "@bufbuild/protobuf";
import { AppError, Code } from "@poseloop/core";
import { decodeModel, encodeModel, inspectModel, type ModelProto } from "@poseloop/onnx";
import { NodeProtoSchema } from "@poseloop/proto/onnx/onnx_pb";
import { buildInferenceModel, defineModel, initialize, Rng, type ModelConfig } from "@poseloop/train";
import { afterAll, describe, expect, it } from "vitest";
import { defaultStrategies, entropyThreshold, percentileThreshold, quantizeModel, runQuantizationGate, writeModelFile } from "@poseloop/quant";

const scratch = await mkdtemp(join(tmpdir(), "poseloop-quant-"));
afterAll(() => rm(scratch, { recursive: true, force: true }));

function zooModel(config: ModelConfig): ModelProto {
  const model = defineModel(config);
  const rng = new Rng(2);
  // Heads at the reference's N(0, 0.001²) would give all-but-zero outputs; a wider init gives SQNR something to measure.
  const spec = (s: (typeof model.registry.params)[number]) => (s.init.kind === "normal" ? { ...s, init: { kind: "normal" as const, std: 0.1 } } : s);
  return buildInferenceModel(model, {
    params: new Map(model.registry.params.map((s) => [s.name, initialize(spec(s), rng)])),
    buffers: new Map(model.registry.buffers.map((s) => [s.name, initialize(s, rng)])),
  });
}

function feedsFor(name: string, dims: number[], count: number, seed: number): Record<string, ort.Tensor>[] {
  const rng = new Rng(seed);
  return Array.from({ length: count }, () => ({ [name]: new ort.Tensor("float32", Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, () => rng.normal()), dims) }));
}

/** Ops of the graph onnxruntime actually runs (saved with optimizedModelFilePath). */
async function optimizedOps(bytes: Uint8Array): Promise<Record<string, number>> {
  const path = join(scratch, `optimized-${Math.random().toString(36).slice(2)}.onnx`);
  const session = await ort.InferenceSession.create(bytes, { optimizedModelFilePath: path, graphOptimizationLevel: "all", logSeverityLevel: 3 });
  await session.release();
  return inspectModel(decodeModel(await readFile(path))).ops;
}

async function outputs(bytes: Uint8Array, feed: Record<string, ort.Tensor>): Promise<Record<string, Float32Array>> {
  const session = await ort.InferenceSession.create(bytes);
  try {
    const out = await session.run(feed);
    return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.data as Float32Array]));
  } finally {
    await session.release();
  }
}

/** Float convolutions in any domain (ONNX, com.microsoft, com.microsoft.nchwc). */
function floatConvolutions(ops: Record<string, number>): number {
  return Object.entries(ops)
    .filter(([op]) => /(^|\.)(Conv|ConvTranspose|FusedConv)$/.test(op))
    .reduce((n, [, count]) => n + count, 0);
}

function sqnrDb(reference: Float32Array, approx: Float32Array): number {
  let signal = 0;
  let noise = 0;
  for (let i = 0; i < reference.length; i++) {
    signal += (reference[i] as number) ** 2;
    noise += ((reference[i] as number) - (approx[i] as number)) ** 2;
  }
  return 10 * Math.log10(signal / noise);
}

describe("quantizeModel on the zoo", () => {
  it.each([
    // The lite model at its real widths: its int8 file must be ≤ 0.3x fp32 although graph structure is a visible
    // share of so small a file. The others are narrowed to keep the test fast.
    ["lite", { architecture: "lite", inputWidth: 48, inputHeight: 64, numKeypoints: 17 }, 0.3],
    ["lite with a 1/16 stage", { architecture: "lite", lite: { channels: [16, 32, 64, 128] }, inputWidth: 48, inputHeight: 64, numKeypoints: 17 }, 0.3],
    ["SimpleBaseline-R18", { architecture: "simplebaseline", simpleBaseline: { depth: 18, baseWidth: 16, deconvFilters: [32, 32, 32] }, inputWidth: 64, inputHeight: 96, numKeypoints: 17 }, 0.35],
    ["HRNet-W8", { architecture: "hrnet", hrnet: { width: 8 }, inputWidth: 64, inputHeight: 96, numKeypoints: 17 }, 0.35],
  ] as const)("%s runs as fused int8 kernels: QLinearConv, no float convolution left", async (_name, config, maxSizeRatio) => {
    const fp32 = zooModel(config);
    const dims = [2, 3, config.inputHeight, config.inputWidth];
    const quantized = await quantizeModel(fp32, feedsFor("input", dims, 3, 7));
    const ops = await optimizedOps(quantized.bytes);
    expect(ops["com.microsoft.QLinearConv"] ?? ops["QLinearConv"] ?? 0).toBeGreaterThan(0);
    expect(floatConvolutions(ops), JSON.stringify(ops)).toBe(0);
    expect(quantized.report.sizeRatio).toBeLessThanOrEqual(maxSizeRatio);
    expect(quantized.report.layers.every((layer) => layer.sqnrDb > 15)).toBe(true);
    const [feed] = feedsFor("input", dims, 1, 99);
    const [a, b] = await Promise.all([outputs(encodeModel(fp32), feed as never), outputs(quantized.bytes, feed as never)]);
    expect(sqnrDb(a["heatmaps"] as Float32Array, b["heatmaps"] as Float32Array)).toBeGreaterThan(20);
  });

  it("keeps named nodes in fp32 and says so in the report", async () => {
    const config = { architecture: "lite", inputWidth: 48, inputHeight: 64, numKeypoints: 17 } as const;
    const fp32 = zooModel(config);
    const head = fp32.graph?.node.find((node) => node.opType === "Conv" && node.output[0] === "heatmaps");
    expect(head).toBeDefined();
    const quantized = await quantizeModel(fp32, feedsFor("input", [2, 3, 64, 48], 2, 3), { keepFp32: [head?.name ?? ""] });
    expect(quantized.report.keptFp32).toEqual([head?.name]);
    const ops = await optimizedOps(quantized.bytes);
    expect(floatConvolutions(ops), JSON.stringify(ops)).toBe(1);
  });
});

describe("quantizeModel weight range", () => {
  const config = { architecture: "lite", inputWidth: 48, inputHeight: 64, numKeypoints: 17 } as const;
  const weightsOf = (model: ModelProto) => (model.graph?.initializer ?? []).filter((t) => t.name.endsWith("/int8")).map((t) => new Int8Array(t.rawData.buffer, t.rawData.byteOffset, t.rawData.byteLength));
  const largest = (model: ModelProto) => Math.max(...weightsOf(model).map((w) => w.reduce((m, v) => Math.max(m, Math.abs(v)), 0)));

  it("keeps weights within ±64 by default and uses ±127 when asked, saying which in the report", async () => {
    const fp32 = zooModel(config);
    const feeds = feedsFor("input", [2, 3, 64, 48], 2, 3);
    const reduced = await quantizeModel(fp32, feeds, { skipSqnr: true });
    const full = await quantizeModel(fp32, feeds, { skipSqnr: true, fullRangeWeights: true });
    expect(weightsOf(reduced.model).length).toBeGreaterThan(5);
    expect([reduced.report.weightRange, largest(reduced.model)]).toEqual([64, 64]);
    expect([full.report.weightRange, largest(full.model)]).toEqual([127, 127]);
  });

  it("runs on this CPU's int8 kernels as onnxruntime's exact QDQ semantics say, where full-range weights may saturate", async () => {
    // With graph optimizations off onnxruntime computes DequantizeLinear -> float op -> QuantizeLinear: the exact
    // result of the int8 model. Fused int8 kernels on x86 without VNNI add uint8·int8 products in pairs into
    // saturating int16; with the default reduced range they cannot overflow, on any CPU.
    const foreign = readFileSync(fileURLToPath(new URL("../fixtures/foreign-pose-opset13.onnx", import.meta.url)));
    const quantized = await quantizeModel(foreign, feedsFor("image", [2, 3, 64, 48], 3, 5), { calibrator: "percentile", percentile: 99.99, skipSqnr: true });
    const [feed] = feedsFor("image", [2, 3, 64, 48], 1, 42);
    const run = async (level: "all" | "disabled") => {
      const session = await ort.InferenceSession.create(quantized.bytes, { graphOptimizationLevel: level });
      try {
        const out = await session.run(feed as never);
        return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.data as Float32Array]));
      } finally {
        await session.release();
      }
    };
    const [kernels, exact] = [await run("all"), await run("disabled")];
    expect(sqnrDb(exact["heatmaps"] as Float32Array, kernels["heatmaps"] as Float32Array)).toBeGreaterThan(40);
    expect(sqnrDb(exact["visibility"] as Float32Array, kernels["visibility"] as Float32Array)).toBeGreaterThan(40);
  });
});

describe("quantizeModel on a model exported by PyTorch (opset 13)", () => {
  const foreign = readFileSync(fileURLToPath(new URL("../fixtures/foreign-pose-opset13.onnx", import.meta.url)));

  it("folds its BatchNorms and Constants, quantizes Conv, ConvTranspose and Gemm, and stays close to fp32", async () => {
    const quantized = await quantizeModel(foreign, feedsFor("image", [2, 3, 64, 48], 3, 5), { calibrator: "percentile", percentile: 99.99 });
    expect(quantized.report.foldedBatchNorms).toBe(2);
    expect(quantized.report.decomposedConvTransposes).toBe(1);
    const ops = await optimizedOps(quantized.bytes);
    expect((ops["com.microsoft.QLinearConv"] ?? 0) + (ops["QLinearConv"] ?? 0)).toBeGreaterThanOrEqual(6);
    expect(ops["com.microsoft.QGemm"], JSON.stringify(ops)).toBe(1);
    expect(floatConvolutions(ops), JSON.stringify(ops)).toBe(0);
    const [feed] = feedsFor("image", [2, 3, 64, 48], 1, 42);
    const [a, b] = await Promise.all([outputs(foreign, feed as never), outputs(quantized.bytes, feed as never)]);
    expect(sqnrDb(a["heatmaps"] as Float32Array, b["heatmaps"] as Float32Array)).toBeGreaterThan(20);
    expect(sqnrDb(a["visibility"] as Float32Array, b["visibility"] as Float32Array)).toBeGreaterThan(20);
  });
});

describe("calibrators", () => {
  it("percentile and entropy clip a long sparse tail that MinMax keeps", () => {
    // |x| roughly half-normal over the first quarter of the range, plus rare outliers up to the maximum.
    const histogram = Float64Array.from({ length: 2048 }, (_, i) => Math.round(1e6 * Math.exp(-((i / 200) ** 2))));
    for (const i of [900, 1300, 1700, 2047]) histogram[i] = (histogram[i] as number) + 1;
    const bound = 2048;
    expect(percentileThreshold(histogram, bound, 100)).toBe(bound);
    const p = percentileThreshold(histogram, bound, 99.99);
    expect(p).toBeGreaterThan(400);
    expect(p).toBeLessThan(900);
    const entropy = entropyThreshold(histogram, bound);
    expect(entropy).toBeGreaterThan(300);
    expect(entropy).toBeLessThan(1200);
  });
});

describe("bad input", () => {
  const fp32 = zooModel({ architecture: "lite", inputWidth: 48, inputHeight: 64, numKeypoints: 17 });
  const feeds = feedsFor("input", [1, 3, 64, 48], 1, 1);

  it("names the node of a malformed graph", async () => {
    const broken = decodeModel(encodeModel(fp32));
    const node = broken.graph?.node[3];
    if (node !== undefined) node.input[0] = "nowhere";
    await expect(quantizeModel(broken, feeds)).rejects.toSatisfy((e) => AppError.is(e, Code.INVALID_ARGUMENT) && /reads nowhere/.test(e.message) && e.message.includes(node?.name ?? "?"));
  });

  it("names a node of another domain", async () => {
    const custom = decodeModel(encodeModel(fp32));
    custom.graph?.node.splice(1, 0, create(NodeProtoSchema, { opType: "Mystery", domain: "com.example", name: "odd_node", input: ["input"], output: ["odd"] }));
    await expect(quantizeModel(custom, feeds)).rejects.toSatisfy((e) => AppError.is(e, Code.INVALID_ARGUMENT) && /odd_node/.test(e.message) && /com\.example\.Mystery/.test(e.message));
  });

  it("refuses bytes that are not ONNX and unknown fp32 node names", async () => {
    await expect(quantizeModel(new TextEncoder().encode("definitely not a model"), feeds)).rejects.toSatisfy((e) => AppError.is(e, Code.INVALID_ARGUMENT));
    await expect(quantizeModel(fp32, feeds, { keepFp32: ["no_such_node"] })).rejects.toThrow(/no node named no_such_node/);
  });

  it("writes model files whole or not at all", async () => {
    const path = join(scratch, "model.int8.onnx");
    await writeModelFile(path, Uint8Array.of(1, 2, 3));
    expect([...(await readFile(path))]).toEqual([1, 2, 3]);
    await expect(writeModelFile(join(scratch, "missing-dir", "model.onnx"), Uint8Array.of(1))).rejects.toThrow();
    expect((await readdir(scratch)).filter((name) => name.endsWith(".partial"))).toEqual([]);
  });
});

describe("runQuantizationGate", () => {
  it("tries the strategies in order and accepts the first within the AP limit", async () => {
    const fp32 = zooModel({ architecture: "lite", inputWidth: 48, inputHeight: 64, numKeypoints: 17 });
    const head = fp32.graph?.node.find((node) => node.output[0] === "heatmaps")?.name ?? "";
    // A stand-in evaluator: all-int8 loses 2 AP points, any model with a float head loses 0.4.
    const evaluate = async (bytes: Uint8Array): Promise<number> => {
      const model = decodeModel(bytes);
      const quantizedHead = model.graph?.node.some((node) => node.opType === "QuantizeLinear" && node.input[0] === "heatmaps/float") ?? false;
      const int8 = model.graph?.node.some((node) => node.opType === "QuantizeLinear") ?? false;
      return !int8 ? 0.75 : quantizedHead ? 0.73 : 0.746;
    };
    const result = await runQuantizationGate(fp32, feedsFor("input", [1, 3, 64, 48], 2, 1), { maxApDrop: 1, evaluate, strategies: defaultStrategies("minmax", [head]), quantize: { skipSqnr: true } });
    expect(result.passed).toBe(true);
    expect(result.fp32Ap).toBe(0.75);
    expect(result.attempts.map((a) => [a.strategy, a.passed])).toEqual([
      ["all-int8", false],
      ["head-fp32", true],
    ]);
    const failing = await runQuantizationGate(fp32, feedsFor("input", [1, 3, 64, 48], 2, 1), { maxApDrop: 0.1, evaluate, strategies: defaultStrategies("minmax", [head]).slice(0, 2), quantize: { skipSqnr: true } });
    expect(failing.passed).toBe(false);
    expect(failing.accepted).toBeUndefined();
    expect(failing.message).toMatch(/no int8 model within 0.1 AP points/);
  });
});
