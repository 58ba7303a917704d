#!/usr/bin/env node
import { natsUrlSecrets, redactSecrets } from "@poseloop/bus";
import { AppError, createJsonLogger, describeStartupError, stopOnSignals } from "@poseloop/core";
import { startTelemetry } from "@poseloop/telemetry";
import { loadConfig } from "./config.js";
import { startInferencer } from "./inferencer.js";

// Secrets never reach a log line, whichever library wrote it: a NATS URL in an error's cause, a token in a
// message. They are known before the config is (a config error may quote a variable).
const secrets = natsUrlSecrets((process.env["POSELOOP_NATS_URL"] ?? "").split(",").map((server) => server.trim()));
const write = (line: string): void => void process.stdout.write(redactSecrets(line, secrets));
const bootLogger = createJsonLogger({ name: "inferencer", write });
try {
  const config = loadConfig(process.env);
  secrets.push(...config.grpc.tokens.map(({ token }) => token));
  const logger = createJsonLogger({ name: "inferencer", level: config.logLevel, write }).child({ instance_id: config.instanceId });
  for (const warning of config.telemetryWarnings) logger.warn(warning);
  for (const { name, suggestion } of config.unknownVariables) {
    const hint = suggestion === undefined ? "" : `; did you mean ${suggestion}?`;
    logger.warn(`ignoring ${name}: no PoseLoop program reads it${hint}`, { variable: name, did_you_mean: suggestion });
  }
  // Before the service's parts exist: they take their instruments from the MeterProvider this installs.
  const telemetry = await startTelemetry(config.telemetry, { logger, metrics: config.metrics });
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
  process.stderr.write(`poseloop-inferencer: ${redactSecrets(describeStartupError(error), secrets)}\n`);
  process.exit(1);
}
