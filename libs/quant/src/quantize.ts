import { decodeModel, encodeModel, type ModelProto } from "@poseloop/onnx";
import { calibrate, type CalibrationFeeds, type CalibratorKind } from "./calibration.js";
import { depthToSpaceAsReshapes } from "./convtranspose-decomposition.js";
import { prepareForQuantization } from "./prepare.js";
import { activationParameters, planQuantization, rewriteQdq } from "./qdq-rewrite.js";
import { layerSqnr, type LayerReport } from "./report.js";
import { FULL_WEIGHT_RANGE, REDUCED_WEIGHT_RANGE, type ActivationType } from "./quant-params.js";

export interface QuantizeOptions {
  /** Default "minmax". */
  readonly calibrator?: CalibratorKind;
  /** For the percentile calibrator; default 99.999. */
  readonly percentile?: number;
  /** Node names (or output names) left in fp32, e.g. the head. */
  readonly keepFp32?: readonly string[];
  /** Default "uint8" (asymmetric activations; int8 per-channel symmetric weights either way). */
  readonly activationType?: ActivationType;
  /** Skip the SQNR pass of the report (faster; layers get NaN). */
  readonly skipSqnr?: boolean;
  /**
   * Full 8-bit weights ([−127, 127]) instead of the default reduced range ([−64, 64]). Only for models served
   * where onnxruntime's int8 kernels cannot saturate — x86 with VNNI (AVX512-VNNI, AVX-VNNI, AMX), ARM — since
   * elsewhere full-range weights overflow its int16 intermediate sums (see REDUCED_WEIGHT_RANGE). The model file
   * does not say which CPU will run it, so the safe range is the default, as in PyTorch's x86 (fbgemm) defaults.
   */
  readonly fullRangeWeights?: boolean;
}

export interface QuantizationReport {
  readonly calibrator: CalibratorKind;
  readonly percentile: number | undefined;
  readonly activationType: ActivationType;
  /** Int8 weights lie in [−weightRange, weightRange]: 64 (reduced, the default) or 127 (fullRangeWeights). */
  readonly weightRange: number;
  readonly calibrationBatches: number;
  /** Quantized compute layers: scales and output SQNR. */
  readonly layers: readonly LayerReport[];
  readonly quantizedTensors: number;
  readonly keptFp32: readonly string[];
  readonly foldedBatchNorms: number;
  readonly decomposedConvTransposes: number;
  /** Convolutions whose input channels were padded to a multiple of 4 (the RGB stem). */
  readonly paddedConvInputs: number;
  readonly fp32Bytes: number;
  readonly int8Bytes: number;
  /** int8 file size / fp32 file size. */
  readonly sizeRatio: number;
}

export interface QuantizedModel {
  readonly model: ModelProto;
  readonly bytes: Uint8Array;
  readonly report: QuantizationReport;
}

/**
 * Static post-training quantization to QDQ int8: prepares the float model (constants, BN folding), plans the
 * quantized nodes, calibrates activation ranges on `feeds`, rewrites the graph, and reports per-layer scales,
 * SQNR and sizes. Refuses malformed models and unsupported ops with an INVALID_ARGUMENT naming the node.
 */
export async function quantizeModel(fp32: ModelProto | Uint8Array, feeds: CalibrationFeeds, options: QuantizeOptions = {}): Promise<QuantizedModel> {
  const source = fp32 instanceof Uint8Array ? decodeModel(fp32) : fp32;
  const prepared = prepareForQuantization(source);
  const plan = planQuantization(prepared.model, options.keepFp32);
  const calibrator = options.calibrator ?? "minmax";
  const activationType = options.activationType ?? "uint8";
  const ranges = await calibrate(prepared.model, plan.tensors, feeds, {
    calibrator,
    ...(options.percentile === undefined ? {} : { percentile: options.percentile }),
  });
  // Calibration saw every tensor's shape: DepthToSpace can now become the int8-capable reshapes it is made of.
  const interleaved = depthToSpaceAsReshapes(prepared.model, new Map([...ranges].map(([name, range]) => [name, range.shape])));
  const model = interleaved.replaced > 0 ? interleaved.model : prepared.model;
  const finalPlan = interleaved.replaced > 0 ? planQuantization(model, options.keepFp32) : plan;
  const params = activationParameters(finalPlan, ranges, activationType);
  const weightRange = options.fullRangeWeights === true ? FULL_WEIGHT_RANGE : REDUCED_WEIGHT_RANGE;
  const rewritten = rewriteQdq(model, finalPlan, params, activationType, weightRange);
  const bytes = encodeModel(rewritten.model);
  const layers = options.skipSqnr === true ? rewritten.layers.map((layer) => ({ ...layer, sqnrDb: Number.NaN })) : await layerSqnr(prepared.model, rewritten.model, rewritten.layers, feeds);
  const fp32Bytes = encodeModel(prepared.model).byteLength;
  return {
    model: rewritten.model,
    bytes,
    report: {
      calibrator,
      percentile: calibrator === "percentile" ? (options.percentile ?? 99.999) : undefined,
      activationType,
      weightRange,
      calibrationBatches: feeds.length,
      layers,
      quantizedTensors: plan.tensors.length,
      keptFp32: plan.keptFp32,
      foldedBatchNorms: prepared.foldedBatchNorms,
      decomposedConvTransposes: prepared.decomposedConvTransposes,
      paddedConvInputs: prepared.paddedConvInputs,
      fp32Bytes,
      int8Bytes: bytes.byteLength,
      sizeRatio: bytes.byteLength / fp32Bytes,
    },
  };
}
