export { parseExperiment, prepareExperiment } from "./experiment.js";
export type { PrepareExperimentOptions } from "./experiment.js";
export { modelConfigFromSpec } from "./model-config.js";
export { resolveTrainConfig } from "./validate.js";
