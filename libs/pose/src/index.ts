export { BLAZEPOSE_DEFAULT_SIGMA, BLAZEPOSE33, COCO_WHOLEBODY133, COCO17, flipPermutation, KNOWN_KEYPOINT_SCHEMAS, keypointSchemaByName, schemaProblems } from "./keypoint-schema.js";
export type { KeypointSchema } from "./keypoint-schema.js";
export { applyAffine, applyAffineToPoints, composeAffine, IDENTITY, invertAffine } from "./affine.js";
export type { Affine2D } from "./affine.js";
export { boxIou, keypointsBox } from "./box.js";
export type { Box, Size } from "./box.js";
export { boxToCropRegion, cropAffine, cropInverseAffine, keypointsToFrame } from "./top-down-crop.js";
export type { CropAffineOptions, CropRegion, CropRegionOptions } from "./top-down-crop.js";
export type { DecodeDestination, DecodedKeypoints, EncodeDestination, EncodedKeypoints, KeypointCodec } from "./keypoint-codec.js";
export { HeatmapCodec } from "./heatmap-codec.js";
export type { HeatmapCodecOptions, HeatmapRefinement } from "./heatmap-codec.js";
export { MsraHeatmapCodec } from "./msra-heatmap-codec.js";
export type { MsraHeatmapCodecOptions } from "./msra-heatmap-codec.js";
export { UdpHeatmapCodec } from "./udp-heatmap-codec.js";
export { SimccCodec } from "./simcc-codec.js";
export type { SimccCodecOptions } from "./simcc-codec.js";
export { createKeypointCodec } from "./create-keypoint-codec.js";
export type { KeypointCodecSpec } from "./create-keypoint-codec.js";
export { averageOutputs, flipHeatmaps, flipSimccVectors } from "./flip-test.js";
export type { FlipHeatmapsOptions, HeatmapShape, SimccShape } from "./flip-test.js";
export { keypointOks } from "./oks.js";
export { keypointErrors } from "./keypoint-errors.js";
export type { KeypointErrorReport, KeypointErrorStats } from "./keypoint-errors.js";
export type { OksGroundTruth } from "./oks.js";
export { oksNms } from "./oks-nms.js";
export type { OksNmsCandidate, OksNmsOptions } from "./oks-nms.js";
export { instanceScore } from "./instance-score.js";
export { COCO_KEYPOINT_AREA_RANGES, COCO_OKS_THRESHOLDS, COCO_RECALL_THRESHOLDS, evaluateKeypoints } from "./coco-keypoint-eval.js";
export type {
  CocoImageRef,
  CocoKeypointDetection,
  CocoKeypointEvalOptions,
  CocoKeypointEvaluation,
  CocoKeypointGroundTruth,
  CocoKeypointStats,
} from "./coco-keypoint-eval.js";
export { COCO_BOX_AREA_RANGES, COCO_BOX_MAX_DETECTIONS, COCO_IOU_THRESHOLDS, cocoBoxIou, evaluateBoxes } from "./coco-box-eval.js";
export type { CocoBoxDetection, CocoBoxEvalOptions, CocoBoxEvaluation, CocoBoxGroundTruth, CocoBoxStats } from "./coco-box-eval.js";
export { CocoKeypointMetric } from "./coco-keypoint-metric.js";
export type { CocoKeypointMetricDetection, CocoKeypointMetricOptions } from "./coco-keypoint-metric.js";
export { pckAccuracy, PckMetric } from "./pck.js";
export type { PckInstance, PckOptions, PckResult } from "./pck.js";
export { KeypointSmoother } from "./keypoint-smoother.js";
export type { SmoothingOptions } from "./keypoint-smoother.js";
export { PoseTracker } from "./pose-tracker.js";
export type { TrackablePerson, TrackingMetric, TrackingOptions } from "./pose-tracker.js";
export { decodeToFrame } from "./decode-to-frame.js";
