export { jpegFrame, pacedJpegFrames, pngFrame, startHarness, streamRequests, syntheticJpegs, plainPng } from "./harness.js";
export type { InferenceClient, InferencerHarness } from "./harness.js";
export { buildBrokenTestModel, buildTestModel, publishTestModel, randomWeights, testModelConfig } from "./test-models.js";
export type { BrokenModelKind, PublishTestModelOptions, TestModel, TestModelOptions } from "./test-models.js";
export { publishTestDetector } from "./test-detectors.js";
export type { TestDetectorOptions } from "./test-detectors.js";
