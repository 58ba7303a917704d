export { fixedOutputDetector, plantedDetector, plantedOutputs } from "./detector-models.js";
export type { FixedOutput, PlantedBox } from "./detector-models.js";
