import type { EnvReader, LogFields, Logger } from "@poseloop/core";
import { GrpcServer, type ListenAddress } from "./server.js";

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

/** A listening server built from settings, and how to stop it. */
export interface RunningServer<T = void> {
  readonly server: GrpcServer;
  readonly address: ListenAddress;
  /** What `register` returned (the services it built, for the caller to start and stop). */
  readonly registered: T;
  /** Drains open calls for up to the configured timeout, then cancels what is left. */
  stop(): Promise<void>;
}

/**
 * Builds a GrpcServer from a service's settings, lets `register` add its services, listens, and logs a
 * "listening" line with the address (service launchers and tests wait for that line).
 */
export async function startGrpcServer<T = void>(
  settings: GrpcServerSettings,
  options: {
    logger: Logger;
    service: string;
    initialHealth?: "SERVING" | "NOT_SERVING";
    register?: (server: GrpcServer) => T;
    fields?: LogFields;
  },
): Promise<RunningServer<T>> {
  const { logger } = options;
  const server = new GrpcServer({
    logger,
    maxReceiveMessageBytes: settings.maxMessageBytes,
    maxSendMessageBytes: settings.maxMessageBytes,
    ...(options.initialHealth === undefined ? {} : { initialHealth: options.initialHealth }),
  });
  const registered = options.register?.(server) as T;
  const address = await server.listen(settings.host, settings.port);
  logger.info("listening", { service: options.service, address: `${address.host}:${address.port}`, ...options.fields });
  return {
    server,
    address,
    registered,
    stop: async () => {
      const { forced } = await server.drain(settings.drainTimeoutMs);
      if (forced) logger.warn("calls still open at the drain timeout were cancelled", { timeout_ms: settings.drainTimeoutMs });
    },
  };
}
