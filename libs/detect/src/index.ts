export { decodeDetections, DEFAULT_IOU_THRESHOLD, DEFAULT_MAX_DETECTIONS, DEFAULT_SCORE_THRESHOLD, resolveThresholds } from "./decode-detections.js";
export type { DecodeOptions, DetectorOutput } from "./decode-detections.js";
export { detectorInput } from "./detector-input.js";
export type { DetectorInputGeometry } from "./detector-input.js";
export {
  checkDetectorOutputs,
  checkDetectorSpec,
  DEFAULT_OUTPUT_NAMES,
  detectorOutputNames,
  detectorStrides,
  HEAD_NAMES,
} from "./detector-layout.js";
export type { DeclaredDims } from "./detector-layout.js";
export { detectionIou, nonMaximumSuppression } from "./person-detection.js";
export type { PersonDetection } from "./person-detection.js";
