import { assertModelName, busOptionsFromEnv, modelNameProblems, type BusOptions } from "@poseloop/bus";
import { EnvReader, LogLevel, type Env } from "@poseloop/core";
import { grpcServerSettingsFromEnv, type GrpcServerSettings } from "@poseloop/grpc";
import { telemetryConfigFromEnv, type TelemetryConfig } from "@poseloop/telemetry";
import { hostname } from "node:os";

export interface InferencerConfig {
  readonly grpc: GrpcServerSettings;
  readonly bus: Omit<BusOptions, "logger">;
  readonly logLevel: LogLevel;
  readonly telemetry: TelemetryConfig;
  readonly telemetryWarnings: readonly string[];
  /** The model name served when a request names none. */
  readonly defaultModel: string;
  readonly instanceId: string;
}

/**
 * The inferencer's configuration from environment variables, every problem reported at once:
 * POSELOOP_INFERENCER_LISTEN (default 0.0.0.0:50051), POSELOOP_MODEL (default "demo"), POSELOOP_NATS_URL,
 * POSELOOP_BUS_DIR, POSELOOP_LOG_LEVEL, POSELOOP_INSTANCE_ID, POSELOOP_GRPC_MAX_MESSAGE_BYTES,
 * POSELOOP_DRAIN_TIMEOUT and the standard OTEL_* ones.
 */
export function loadConfig(env: Env): InferencerConfig {
  const reader = new EnvReader(env);
  const grpc = grpcServerSettingsFromEnv(reader, "POSELOOP_INFERENCER", "0.0.0.0:50051");
  const defaultModel = reader.string("POSELOOP_MODEL", { default: "demo" });
  for (const problem of modelNameProblems(defaultModel)) reader.problem(`POSELOOP_MODEL: ${problem}`);
  const instanceId = reader.string("POSELOOP_INSTANCE_ID", {
    default: `inferencer-${hostname()}-${process.pid}`,
    pattern: /^[A-Za-z0-9._-]{1,64}$/,
    hint: "must be 1-64 letters, digits, '.', '_' or '-'",
  });
  const bus = busOptionsFromEnv(reader, instanceId);
  const logLevel = reader.oneOf("POSELOOP_LOG_LEVEL", Object.keys(LogLevel) as LogLevel[], { default: "info" });
  reader.done("inferencer configuration");
  assertModelName(defaultModel);
  const { config: telemetry, warnings } = telemetryConfigFromEnv(env, { serviceName: "poseloop-inferencer", serviceVersion: "0.1.0" });
  return Object.freeze({ grpc, bus, logLevel, telemetry, telemetryWarnings: warnings, defaultModel, instanceId });
}
