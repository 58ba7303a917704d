export type { FrameImage, FrameJob, FrameOutcome, PersonEstimate, StageTimings } from "./frame-job.js";
export { PoseEstimator } from "./pose-estimator.js";
export type { PoseEstimatorOptions } from "./pose-estimator.js";
export { servingSpecFromManifest } from "./serving-spec.js";
export type { ServingSpec } from "./serving-spec.js";
export { evaluateModel, evaluationSetFromCoco } from "./evaluate.js";
export type { EvaluateOptions, EvaluationSet, ModelEvaluation } from "./evaluate.js";
export { DecodedFrameCache } from "./frame-cache.js";
export type { DecodedFrameCacheOptions } from "./frame-cache.js";
