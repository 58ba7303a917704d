import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/nats-core";
import { AppError, Code, silentLogger, type Logger } from "@poseloop/core";

export interface NatsConnectOptions {
  /** One or more server URLs (nats://host:4222). */
  servers: string | readonly string[];
  /** Client name shown by the server (e.g. "trainer-<host>"). */
  name?: string;
  logger?: Logger;
  /** Delay between reconnect attempts. Default 500 ms (with jitter). */
  reconnectTimeWaitMs?: number;
  /** Client pings; a server that misses 2 is considered gone. Default 10 s. */
  pingIntervalMs?: number;
  /** How long the first connection may take per attempt. Default 10 s. */
  timeoutMs?: number;
  /**
   * Request timeout of JetStream API calls (KV reads and writes, consumer and object-store requests). Default
   * 10 s: nats.js's own 5 s is short for a busy server writing file storage on a loaded machine.
   */
  apiTimeoutMs?: number;
}

/** JetStream API request timeout unless NatsConnectOptions.apiTimeoutMs sets one. */
export const DEFAULT_API_TIMEOUT_MS = 10_000;

/**
 * Connects to NATS for a service's lifetime: waits for the first connection if the server is not up yet,
 * reconnects forever after losing it, and logs every status change (disconnect, reconnect, errors).
 */
export async function connectNats(options: NatsConnectOptions): Promise<NatsConnection> {
  const logger = options.logger ?? silentLogger;
  const servers = typeof options.servers === "string" ? [options.servers] : [...options.servers];
  let connection: NatsConnection;
  try {
    connection = await connect({
      servers,
      ...(options.name === undefined ? {} : { name: options.name }),
      maxReconnectAttempts: -1,
      waitOnFirstConnect: true,
      reconnectTimeWait: options.reconnectTimeWaitMs ?? 500,
      pingInterval: options.pingIntervalMs ?? 10_000,
      timeout: options.timeoutMs ?? 10_000,
    });
  } catch (error) {
    throw new AppError(Code.UNAVAILABLE, `cannot connect to NATS at ${servers.join(", ")}`, { cause: error });
  }
  logger.info("nats connected", { server: connection.getServer() });
  void (async () => {
    for await (const status of connection.status()) {
      switch (status.type) {
        case "disconnect":
        case "reconnecting":
        case "staleConnection":
          logger.warn(`nats ${status.type}`, { status });
          break;
        case "reconnect":
          logger.info("nats reconnected", { server: connection.getServer() });
          break;
        case "error":
        case "ldm":
        case "slowConsumer":
          logger.warn(`nats ${status.type}`, { status });
          break;
        default:
          logger.debug(`nats ${status.type}`, { status });
      }
    }
  })().catch((error: unknown) => logger.warn("nats status monitor ended", { err: error }));
  return connection;
}
