export { loadConfig } from "./config.js";
export type { TrainerConfig } from "./config.js";
export { startTrainer } from "./trainer.js";
export type { TrainerProcess } from "./trainer.js";
export { parseExperiment, prepareExperiment, resolveTrainConfig } from "./experiment/index.js";
export { runContract, servingManifest } from "./runner/model-contract.js";
export { TrainingSession } from "./runner/training-session.js";
export type { ExportOutcome, RunPosition, TrainChunk, ValidationOutcome } from "./runner/training-run.js";
