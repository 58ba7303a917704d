export { calibrate, entropyThreshold, percentileThreshold } from "./calibration.js";
export type { CalibrationFeeds, CalibratorKind, TensorRange } from "./calibration.js";
export { defaultStrategies, runQuantizationGate } from "./gate.js";
export type { GateAttempt, GateResult, GateStrategy } from "./gate.js";
export { indexGraph, nodeLabel } from "./graph-analysis.js";
export { prepareForQuantization } from "./prepare.js";
export { activationParameters, planQuantization, rewriteQdq } from "./qdq-rewrite.js";
export type { QuantizationPlan, QuantizedLayer } from "./qdq-rewrite.js";
export { activationParams, FULL_WEIGHT_RANGE, quantizeBias, quantizeWeights, REDUCED_WEIGHT_RANGE, symmetricChannelScales } from "./quant-params.js";
export type { ActivationType, QuantParams } from "./quant-params.js";
export { quantizeModel } from "./quantize.js";
// Model files are written whole or not at all: quantization never leaves a partial file behind.
export { writeFileAtomic as writeModelFile } from "@poseloop/core";
export type { QuantizationReport, QuantizedModel, QuantizeOptions } from "./quantize.js";
export type { LayerReport } from "./report.js";
