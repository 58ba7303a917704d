#!/usr/bin/env node
import { AppError, createJsonLogger, stopOnSignals } from "@poseloop/core";
import { startTelemetry } from "@poseloop/telemetry";
import { loadConfig } from "./config.js";
import { startTrainer } from "./trainer.js";

const bootLogger = createJsonLogger({ name: "trainer" });
try {
  const config = loadConfig(process.env);
  const logger = createJsonLogger({ name: "trainer", level: config.logLevel }).child({ worker_id: config.workerId });
  for (const warning of config.telemetryWarnings) logger.warn(warning);
  const telemetry = startTelemetry(config.telemetry, { logger });
  const trainer = await startTrainer(config, logger);
  stopOnSignals(async () => {
    await trainer.stop();
    await telemetry.shutdown();
  }, logger);
} catch (error) {
  bootLogger.error("trainer failed to start", { err: AppError.from(error) });
  process.exit(1);
}
