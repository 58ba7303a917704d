export { cocoLayout, PERSON_CATEGORY_ID, personCategory } from "./coco-format.js";
export type {
  BoundingBox,
  CocoDetection,
  CocoImage,
  CocoInfo,
  CocoKeypointAnnotation,
  CocoKeypointFile,
  CocoLicense,
  CocoPersonCategory,
} from "./coco-format.js";
export { cocoKeypointFileProblems, parseCocoKeypointFile } from "./coco-keypoint-file.js";
export { writeCocoKeypoints } from "./coco-writer.js";
export type { WriteCocoKeypointsOptions } from "./coco-writer.js";
export { clipBox, cocoPoseInstances, readCocoKeypoints } from "./coco-reader.js";
export type {
  CocoKeypointDataset,
  InstanceFilter,
  PoseInstance,
  ReadCocoKeypointsOptions,
  ValidationBox,
  ValidationImage,
} from "./coco-reader.js";
export { detectionBoxes, parseCocoDetections, readCocoDetections } from "./coco-detections.js";
export type { DetectionFilter } from "./coco-detections.js";
export { SeededRandom } from "@poseloop/core";
export { JOINT_LIMITS, PoseKind, poseHumanoid, sampleBodyShape, samplePose } from "./humanoid-model.js";
export type { BodyPart, BodyShape, Material, PosedHumanoid, PoseAngles } from "./humanoid-model.js";
export { renderSyntheticScene } from "./synthetic-scene.js";
export type { SyntheticPerson, SyntheticScene, SyntheticSceneOptions } from "./synthetic-scene.js";
export { clipOptionProblems, defaultClipWalks, syntheticClip } from "./synthetic-clip.js";
export type { ClipFrame, ClipPerson, ClipWalk, SyntheticClipOptions } from "./synthetic-clip.js";
export { generateSyntheticDataset, SYNTHETIC_GENERATOR_VERSION } from "./synthetic-dataset.js";
export type { SyntheticDatasetOptions, SyntheticDatasetResult } from "./synthetic-dataset.js";
export {
  augmentationProblems,
  augmentRegion,
  halfBodyRegion,
  HRNET_AUGMENTATION,
  jitterColours,
  pasteOcclusion,
  resolveAugmentation,
  sampleAugmentation,
  upperBodyJoints,
} from "./augmentation.js";
export type { AugmentationConfig, OcclusionPatch, ResolvedAugmentation, SampleAugmentation } from "./augmentation.js";
export { DecodedImageStore, DEFAULT_IMAGE_MEMORY_BYTES, imageLabel } from "./decoded-image-store.js";
export type { DecodedImageStoreOptions, ImageCacheOptions, ImageStoreStats } from "./decoded-image-store.js";
export { AUGMENT_STREAM, batchCount, epochOrder, ORDER_STREAM } from "./epoch-order.js";
export { sampleTableFromImages, sampleTableFromInstances } from "./sample-table.js";
export type { SampleTable } from "./sample-table.js";
export { normalizeInPlace, TopDownBatchBuilder } from "./top-down-batch.js";
export type { BadSamplePolicy, BatchBuilderConfig, BatchRequest, PoseBatch, PoseSampleInfo, SkippedSample } from "./top-down-batch.js";
export { PoseBatchPlan, PoseDataLoader } from "./pose-data-loader.js";
export type { EpochOptions, PoseDataLoaderOptions, PoseDataSource } from "./pose-data-loader.js";
export { createDetectionTargets, drawGaussian, encodeDetectionTargets, gaussianRadius } from "./detection-targets.js";
export type { DetectionGrid, DetectionTargets, TargetBox } from "./detection-targets.js";
export { DetectionBatchBuilder, DetectionDataLoader, detectionBatchProblems, detectionImagesFromCoco } from "./detection-batch.js";
export type {
  DetectionAugmentation,
  DetectionBatch,
  DetectionBatchOptions,
  DetectionDataLoaderOptions,
  DetectionImage,
  DetectionObject,
  DetectionSampleInfo,
} from "./detection-batch.js";
