export { loadConfig } from "./config.js";
export type { TrainerConfig } from "./config.js";
export { startTrainer } from "./trainer.js";
export type { TrainerProcess } from "./trainer.js";
