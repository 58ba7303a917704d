import { create, type MessageInitShape } from "@bufbuild/protobuf";
import * as ort from "onnxruntime-node";
import type { ModelRegistry, PublishResult } from "@poseloop/bus";
import { decodeModel, encodeModel, fromTensorProto, hostTensor, toTensorProto } from "@poseloop/onnx";
import { NodeProtoSchema } from "@poseloop/proto/onnx/onnx_pb";
import { ModelManifestSchema, ModelRefSchema, Precision, type ModelManifest } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { quantizeModel } from "@poseloop/quant";
import { buildInferenceModel, defineModel, initialize, modelManifest, Rng, type ModelConfig, type Weights } from "@poseloop/train";

/** A small lite model (64x48 by default) for tests: fast to build, quantize and run. */
export interface TestModelOptions {
  readonly seed?: number;
  readonly inputWidth?: number;
  readonly inputHeight?: number;
  readonly int8?: boolean;
  /** Trained weights instead of a random initialization. */
  readonly weights?: Weights;
  readonly config?: ModelConfig;
}

export interface TestModel {
  readonly config: ModelConfig;
  readonly fp32: Uint8Array;
  /** The serving artifact: int8 unless `int8: false`. */
  readonly serving: Uint8Array;
  readonly precision: Precision;
  readonly manifest: MessageInitShape<typeof ModelManifestSchema>;
}

export function testModelConfig(options: TestModelOptions = {}): ModelConfig {
  return options.config ?? { architecture: "lite", inputWidth: options.inputWidth ?? 48, inputHeight: options.inputHeight ?? 64, numKeypoints: 17, lite: { channels: [8, 16, 32] } };
}

/** Random weights wide enough that heatmaps have structure (the reference head init gives near-zero outputs). */
export function randomWeights(config: ModelConfig, seed: number): Weights {
  const model = defineModel(config);
  const rng = new Rng(seed);
  const widen = (s: (typeof model.registry.params)[number]) => (s.init.kind === "normal" ? { ...s, init: { kind: "normal" as const, std: 0.1 } } : s);
  return {
    params: new Map(model.registry.params.map((s) => [s.name, initialize(widen(s), rng)])),
    buffers: new Map(model.registry.buffers.map((s) => [s.name, initialize(s, rng)])),
  };
}

export async function buildTestModel(options: TestModelOptions = {}): Promise<TestModel> {
  const config = testModelConfig(options);
  const definition = defineModel(config);
  const fp32Proto = buildInferenceModel(definition, options.weights ?? randomWeights(config, options.seed ?? 1));
  const fp32 = encodeModel(fp32Proto);
  const int8 = options.int8 ?? true;
  let serving = fp32;
  if (int8) {
    const rng = new Rng((options.seed ?? 1) + 1000);
    const dims = [2, 3, config.inputHeight, config.inputWidth];
    const feeds = Array.from({ length: 4 }, () => ({ input: new ort.Tensor("float32", Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, () => rng.normal()), dims) }));
    serving = (await quantizeModel(fp32Proto, feeds, { skipSqnr: true })).bytes;
  }
  const precision = int8 ? Precision.INT8 : Precision.FP32;
  return { config, fp32, serving, precision, manifest: modelManifest(config, { precision }) };
}

export interface PublishTestModelOptions {
  readonly promote?: boolean;
  readonly trainingJobId?: string;
  readonly version?: string;
  /** Replaces the serving artifact's bytes (non-ONNX, another model's bytes). */
  readonly servingBytes?: Uint8Array;
  /** Edits the manifest in place before publishing (a wrong input size, another schema). */
  readonly editManifest?: (manifest: ModelManifest) => void;
}

/** Publishes a test model under `modelName` and (by default) makes it the serving version. */
export async function publishTestModel(registry: ModelRegistry, modelName: string, model: TestModel, options: PublishTestModelOptions = {}): Promise<PublishResult> {
  const servingFile = model.precision === Precision.INT8 ? "model.int8.onnx" : "model.onnx";
  const manifest = create(ModelManifestSchema, model.manifest);
  manifest.model = create(ModelRefSchema, { name: modelName, version: options.version ?? "" });
  manifest.trainingJobId = options.trainingJobId ?? "job-test";
  options.editManifest?.(manifest);
  const files = [{ file: "model.onnx", data: model.fp32, precision: Precision.FP32 }];
  if (servingFile !== "model.onnx") files.push({ file: servingFile, data: options.servingBytes ?? model.serving, precision: model.precision });
  else if (options.servingBytes !== undefined) files[0] = { file: "model.onnx", data: options.servingBytes, precision: Precision.FP32 };
  return registry.publish({ manifest, files, servingFile, promote: options.promote ?? true, setBy: "test", reason: "test model" });
}

/**
 * Ways a model can pass a one-crop warm-up and still fail every batched frame: its input batch fixed at 1, a
 * Reshape that hard-codes a batch of 1, or weights that are NaN (every output NaN).
 */
export type BrokenModelKind = "batch-fixed-at-1" | "reshape-to-batch-1" | "nan-weights";

/** The fp32 test model, broken as `kind` says; its manifest is the healthy model's. */
export async function buildBrokenTestModel(kind: BrokenModelKind, options: Omit<TestModelOptions, "int8"> = {}): Promise<TestModel> {
  const healthy = await buildTestModel({ ...options, int8: false });
  const model = decodeModel(healthy.fp32);
  const graph = model.graph;
  if (graph === undefined) throw new Error("the test model has no graph");
  if (kind === "batch-fixed-at-1") {
    const type = graph.input[0]?.type?.value;
    const batch = type?.case === "tensorType" ? type.value.shape?.dim[0] : undefined;
    if (batch === undefined) throw new Error("the test model's input has no batch dimension");
    batch.value = { case: "dimValue", value: 1n };
  } else if (kind === "reshape-to-batch-1") {
    const output = graph.output[0];
    const type = output?.type?.value;
    const dims = type?.case === "tensorType" ? (type.value.shape?.dim ?? []) : [];
    const producer = graph.node.find((node) => node.output.includes(output?.name ?? ""));
    if (output === undefined || producer === undefined || dims.length === 0) throw new Error("the test model's output has no producer or shape");
    const c = healthy.config;
    // The head's output without its batch: what an exporter traced at batch 1 bakes into a Reshape.
    const perPerson = dims.slice(1).map((d) => (d.value.case === "dimValue" ? d.value.value : 0n));
    if (perPerson.some((d) => d === 0n)) throw new Error(`the ${c.architecture} test model's output has symbolic non-batch dimensions`);
    const shapeName = "baked_batch_shape";
    graph.initializer.push(toTensorProto(shapeName, hostTensor("int64", [perPerson.length + 1], [1n, ...perPerson])));
    producer.output = producer.output.map((name) => (name === output.name ? `${name}_before_reshape` : name));
    graph.node.push(create(NodeProtoSchema, { opType: "Reshape", name: "baked_batch_reshape", input: [`${output.name}_before_reshape`, shapeName], output: [output.name] }));
  } else {
    graph.initializer.forEach((proto, i) => {
      const tensor = fromTensorProto(proto);
      if (tensor.dtype !== "float32") return;
      (tensor.data as Float32Array).fill(Number.NaN);
      graph.initializer[i] = toTensorProto(proto.name, tensor);
    });
  }
  const fp32 = encodeModel(model);
  return { ...healthy, fp32, serving: fp32 };
}
