import { create, type MessageInitShape } from "@bufbuild/protobuf";
import * as ort from "onnxruntime-node";
import type { ModelRegistry, PublishResult } from "@poseloop/bus";
import { encodeModel } from "@poseloop/onnx";
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
