import type { EnvReader } from "@poseloop/core";

export interface GrpcServerSettings {
  readonly host: string;
  readonly port: number;
  readonly maxMessageBytes: number;
  readonly drainTimeoutMs: number;
}

/**
 * The gRPC settings of a service: <PREFIX>_LISTEN ("host:port"), POSELOOP_GRPC_MAX_MESSAGE_BYTES and
 * POSELOOP_DRAIN_TIMEOUT (how long a stopping server lets open calls finish).
 */
export function grpcServerSettingsFromEnv(env: EnvReader, prefix: string, defaultListen: string): GrpcServerSettings {
  const { host, port } = env.listenAddress(`${prefix}_LISTEN`, { default: defaultListen });
  return {
    host,
    port,
    maxMessageBytes: env.int("POSELOOP_GRPC_MAX_MESSAGE_BYTES", { default: 16 * 1024 * 1024, min: 1024, max: 1024 * 1024 * 1024 }),
    drainTimeoutMs: env.durationMs("POSELOOP_DRAIN_TIMEOUT", { default: 10_000, min: 0, max: 600_000 }),
  };
}
