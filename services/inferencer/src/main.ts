#!/usr/bin/env node
import { AppError, createJsonLogger, describeStartupError, stopOnSignals } from "@poseloop/core";
import { startTelemetry } from "@poseloop/telemetry";
import { loadConfig } from "./config.js";
import { startInferencer } from "./inferencer.js";

const bootLogger = createJsonLogger({ name: "inferencer" });
try {
  const config = loadConfig(process.env);
  const logger = createJsonLogger({ name: "inferencer", level: config.logLevel }).child({ instance_id: config.instanceId });
  for (const warning of config.telemetryWarnings) logger.warn(warning);
  for (const { name, suggestion } of config.unknownVariables) {
    const hint = suggestion === undefined ? "" : `; did you mean ${suggestion}?`;
    logger.warn(`ignoring ${name}: no PoseLoop program reads it${hint}`, { variable: name, did_you_mean: suggestion });
  }
  const telemetry = startTelemetry(config.telemetry, { logger });
  // Signals are handled from the start: a SIGTERM that arrives while the service is still starting (it
  // already listens) must stop it cleanly too, not kill it.
  const starting = startInferencer(config, logger);
  stopOnSignals(async () => {
    const inferencer = await starting.catch(() => undefined);
    await inferencer?.stop();
    await telemetry.shutdown();
  }, logger);
  await starting;
} catch (error) {
  bootLogger.error("inferencer failed to start", { err: AppError.from(error) });
  // The JSON line above holds the whole cause chain; a person reading the terminal needs the root cause.
  process.stderr.write(`poseloop-inferencer: ${describeStartupError(error)}\n`);
  process.exit(1);
}
