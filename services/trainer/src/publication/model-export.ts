import { toBinary } from "@bufbuild/protobuf";
import { AppError, Code } from "@poseloop/core";
import { encodeModel } from "@poseloop/onnx";
import { KeypointMetricsSchema } from "@poseloop/proto/poseloop/common/v1/metrics_pb";
import { Calibrator, type TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { defaultStrategies, runQuantizationGate, type GateResult } from "@poseloop/quant";
import { buildInferenceModel, decodeTrainingState, defineModel, DetectorIo, encodeTrainingState, IoNames, type ModelConfig, type ModelDefinition, type Weights } from "@poseloop/train";
import { INPUT_NAME, isDetector, OUTPUT_NAME } from "../experiment/model-contract.js";
import type { DetectorEvaluator } from "./detector-evaluator.js";
import { metricsMessage, type ModelEvaluator } from "./model-evaluator.js";

/** The artifacts of a publication and what the AP gate measured; plain data, it crosses from a worker. */
export interface ExportOutcome {
  readonly fp32: Uint8Array;
  readonly int8: Uint8Array | undefined;
  /** The weights as a training state (param:/buffer: tensors), for fine-tuning from this version. */
  readonly weights: Uint8Array;
  readonly fp32Metrics: Uint8Array;
  readonly int8Metrics: Uint8Array | undefined;
  readonly gate:
    | {
        passed: boolean;
        maxApDrop: number;
        message: string;
        attempts: { strategy: string; calibrator: string; fp32Ap: number; int8Ap: number; passed: boolean }[];
        /** The accepted int8 model's weight range (0 when none passed). */
        weightRange: number;
      }
    | undefined;
  readonly epoch: number;
  readonly step: number;
  readonly sizes: { fp32: number; int8: number };
}

/** What is exported: a model's weights and where its run stood when it had them. */
export interface ExportSource {
  readonly model: ModelDefinition;
  readonly weights: Weights;
  /** Epochs completed and optimizer steps taken. */
  readonly epoch: number;
  readonly step: number;
}

const CALIBRATORS = { [Calibrator.MINMAX]: "minmax", [Calibrator.PERCENTILE]: "percentile", [Calibrator.ENTROPY]: "entropy", [Calibrator.UNSPECIFIED]: "percentile" } as const;

/**
 * Export → int8 quantize → AP gate, in the worker that has the weights: the fp32 inference model (BatchNorm
 * folded) and its AP, and, when quantization is on, the int8 model that passed the gate (or the gate's report
 * of why none did). A detector's AP is its box AP, and its three outputs are the head the gate may keep fp32.
 */
export async function exportModel(source: ExportSource, config: TrainConfig, evaluator: ModelEvaluator | DetectorEvaluator): Promise<ExportOutcome> {
  const { model, weights, epoch, step } = source;
  const fp32Proto = inferenceModel(model, weights);
  const fp32 = encodeModel(fp32Proto);
  const fp32Evaluation = await evaluator.evaluate(fp32, `export-fp32-${step}`);
  const fp32Metrics = toBinary(KeypointMetricsSchema, metricsMessage(fp32Evaluation));
  const weightTensors = new Map<string, Float32Array>();
  for (const [name, data] of weights.params) weightTensors.set(IoNames.param(name), data);
  for (const [name, data] of weights.buffers) weightTensors.set(IoNames.buffer(name), data);
  const weightBytes = encodeTrainingState({ step, microStep: 0, tensors: weightTensors });
  const quant = config.quantization;
  if (quant?.enabled !== true) {
    return { fp32, int8: undefined, weights: weightBytes, fp32Metrics, int8Metrics: undefined, gate: undefined, epoch, step, sizes: { fp32: fp32.byteLength, int8: 0 } };
  }
  const calibrator = CALIBRATORS[quant.calibrator];
  let int8Metrics: Uint8Array | undefined;
  let attempt = 0;
  const result: GateResult = await runQuantizationGate(fp32Proto, await evaluator.calibrationFeeds(quant.calibrationSamples || 256), {
    maxApDrop: quant.maxApDrop,
    fp32Ap: fp32Evaluation.stats.ap,
    strategies: defaultStrategies(calibrator, [...(isDetector(config) ? [DetectorIo.centers, DetectorIo.sizes, DetectorIo.offsets] : [OUTPUT_NAME]), ...quant.fp32Nodes], quant.percentile || 99.99).map((s) => ({ ...s, keepFp32: [...new Set([...s.keepFp32, ...quant.fp32Nodes])] })),
    evaluate: async (bytes) => {
      const evaluation = await evaluator.evaluate(bytes, `export-int8-${step}-${attempt++}`);
      int8Metrics = toBinary(KeypointMetricsSchema, metricsMessage(evaluation));
      return evaluation.stats.ap;
    },
    quantize: { skipSqnr: true, fullRangeWeights: quant.fullRangeWeights },
  });
  const gate = {
    passed: result.passed,
    maxApDrop: result.maxApDrop,
    message: result.message,
    attempts: result.attempts.map((a) => ({ strategy: a.strategy, calibrator: a.calibrator, fp32Ap: result.fp32Ap, int8Ap: a.int8Ap, passed: a.passed })),
    weightRange: result.accepted?.report.weightRange ?? 0,
  };
  const int8 = result.accepted?.bytes;
  return { fp32, int8, weights: weightBytes, fp32Metrics, int8Metrics: int8 === undefined ? undefined : int8Metrics, gate, epoch, step, sizes: { fp32: fp32.byteLength, int8: int8?.byteLength ?? 0 } };
}

/** The fp32 inference model (BatchNorm folded) of `weights`, under the serving contract's input and output names. */
export function inferenceModel(model: ModelDefinition, weights: Weights): ReturnType<typeof buildInferenceModel> {
  return buildInferenceModel(model, weights, { inputName: INPUT_NAME, outputName: OUTPUT_NAME });
}

/** The model of `modelConfig` and a training state's weights for it; a state of another model throws DATA_LOSS. */
export function modelFromState(modelConfig: ModelConfig, state: Uint8Array): { model: ModelDefinition; weights: Weights } {
  const model = defineModel(modelConfig);
  return { model, weights: weightsFromState(decodeTrainingState(state).tensors, model) };
}

/**
 * The parameters and buffers of a training state (a checkpoint's or a weights file's), checked against the
 * model: a state of another model would otherwise build an inference graph with the wrong initializers. A
 * checkpoint of a run with TRAIN.EMA gives its moving average, the weights that run validated and exported.
 */
export function weightsFromState(tensors: ReadonlyMap<string, Float32Array>, model: ModelDefinition): Weights {
  const averaged = [...tensors.keys()].some((name) => name.startsWith("ema:"));
  const paramName = averaged ? IoNames.emaParam : IoNames.param;
  const bufferName = averaged ? IoNames.emaBuffer : IoNames.buffer;
  const take = (name: string, shape: readonly number[], what: string): Float32Array => {
    const data = tensors.get(name);
    if (data === undefined) throw new AppError(Code.DATA_LOSS, `the checkpoint has no ${what}`);
    const size = shape.reduce((a, b) => a * b, 1);
    if (data.length !== size) throw new AppError(Code.DATA_LOSS, `the checkpoint's ${what} has ${data.length} values, the model needs ${size}`);
    return data;
  };
  const params = new Map(model.registry.params.map((spec) => [spec.name, take(paramName(spec.name), spec.shape, `${averaged ? "moving average of " : ""}parameter ${spec.name}`)] as const));
  const buffers = new Map(model.registry.buffers.map((spec) => [spec.name, take(bufferName(spec.name), spec.shape, `${averaged ? "moving average of " : ""}buffer ${spec.name}`)] as const));
  return { params, buffers };
}
