export { tinyExperiment } from "./tiny-experiment.js";
export { captureIo } from "./capture-io.js";
export type { CaptureOptions, CapturedIo } from "./capture-io.js";
export { startServiceStub } from "./service-stub.js";
export type { ServiceStub } from "./service-stub.js";
