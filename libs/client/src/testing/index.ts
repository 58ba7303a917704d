export { tinyExperiment } from "./tiny-experiment.js";
export { captureIo } from "./fake-services.js";
