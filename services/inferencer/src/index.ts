export { loadConfig } from "./config.js";
export type { InferencerConfig } from "./config.js";
export { startInferencer } from "./inferencer.js";
export type { InferencerProcess } from "./inferencer.js";
