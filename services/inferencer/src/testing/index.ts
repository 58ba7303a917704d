export { jpegFrame, startHarness, streamRequests, syntheticJpegs } from "./harness.js";
export type { InferenceClient, InferencerHarness } from "./harness.js";
export { buildTestModel, publishTestModel, randomWeights, testModelConfig } from "./test-models.js";
export type { PublishTestModelOptions, TestModel, TestModelOptions } from "./test-models.js";
