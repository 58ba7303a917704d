export { tinyExperiment } from "./tiny-experiment.js";
export { captureIo } from "./capture-io.js";
export type { CapturedIo } from "./capture-io.js";
