import { busOptionsFromEnv, type BusOptions } from "@poseloop/bus";
import { EnvReader, LogLevel, type Env } from "@poseloop/core";
import { grpcServerSettingsFromEnv, type GrpcServerSettings } from "@poseloop/grpc";
import { telemetryConfigFromEnv, type TelemetryConfig } from "@poseloop/telemetry";
import { hostname } from "node:os";

export interface TrainerConfig {
  readonly grpc: GrpcServerSettings;
  readonly bus: Omit<BusOptions, "logger">;
  readonly logLevel: LogLevel;
  readonly telemetry: TelemetryConfig;
  /** Problems with OTEL_* variables that were ignored (telemetry never stops a service). */
  readonly telemetryWarnings: readonly string[];
  /** This process's name in job records and logs. */
  readonly workerId: string;
}

/**
 * The trainer's configuration from environment variables, every problem reported at once:
 * POSELOOP_TRAINER_LISTEN (default 0.0.0.0:50052), POSELOOP_NATS_URL, POSELOOP_BUS_DIR, POSELOOP_LOG_LEVEL,
 * POSELOOP_WORKER_ID, POSELOOP_GRPC_MAX_MESSAGE_BYTES, POSELOOP_DRAIN_TIMEOUT and the standard OTEL_* ones.
 */
export function loadConfig(env: Env): TrainerConfig {
  const reader = new EnvReader(env);
  const grpc = grpcServerSettingsFromEnv(reader, "POSELOOP_TRAINER", "0.0.0.0:50052");
  const workerId = reader.string("POSELOOP_WORKER_ID", {
    default: `trainer-${hostname()}-${process.pid}`,
    pattern: /^[A-Za-z0-9._-]{1,64}$/,
    hint: "must be 1-64 letters, digits, '.', '_' or '-'",
  });
  const bus = busOptionsFromEnv(reader, workerId);
  const logLevel = reader.oneOf("POSELOOP_LOG_LEVEL", Object.keys(LogLevel) as LogLevel[], { default: "info" });
  reader.done("trainer configuration");
  const { config: telemetry, warnings } = telemetryConfigFromEnv(env, { serviceName: "poseloop-trainer", serviceVersion: "0.1.0" });
  return Object.freeze({ grpc, bus, logLevel, telemetry, telemetryWarnings: warnings, workerId });
}
