import type { JetStreamOptions } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { silentLogger, type Logger } from "@poseloop/core";
import type { Bus, EventBus } from "../types.js";
import { NatsBlobStore } from "./blob-store.js";
import { connectNats, DEFAULT_API_TIMEOUT_MS, type NatsConnectOptions } from "./connection.js";
import { NatsEventBus } from "./event-bus.js";
import { NatsJobQueue } from "./job-queue.js";
import { NatsKeyValueStore } from "./key-value-store.js";

/** The bus on NATS JetStream: object stores, KV buckets, the events stream and work queues. */
export class NatsBus implements Bus {
  readonly kind = "nats" as const;
  readonly location: string;
  readonly connection: NatsConnection;
  /** Options of every JetStream handle this bus opens (the API request timeout). */
  readonly #js: JetStreamOptions;
  #events: Promise<EventBus> | undefined;

  private constructor(connection: NatsConnection, location: string, js: JetStreamOptions) {
    this.connection = connection;
    this.location = location;
    this.#js = js;
  }

  static async connect(options: NatsConnectOptions): Promise<NatsBus> {
    const connection = await connectNats(options);
    const location = typeof options.servers === "string" ? options.servers : options.servers.join(",");
    return new NatsBus(connection, location, { timeout: options.apiTimeoutMs ?? DEFAULT_API_TIMEOUT_MS });
  }

  blobStore(bucket: string) {
    return NatsBlobStore.open(this.connection, bucket, this.#js);
  }

  keyValueStore(bucket: string, options: { history?: number } = {}) {
    return NatsKeyValueStore.open(this.connection, bucket, options.history, this.#js);
  }

  events(): Promise<EventBus> {
    this.#events ??= NatsEventBus.open(this.connection, this.#js);
    return this.#events;
  }

  jobQueue(name: string, options: { ackWaitMs?: number; maxDeliveries?: number } = {}) {
    return NatsJobQueue.open(this.connection, name, options.ackWaitMs, this.#js, options.maxDeliveries);
  }

  async close(logger: Logger = silentLogger): Promise<void> {
    if (this.connection.isClosed()) return;
    try {
      await this.connection.drain();
    } catch (error) {
      logger.warn("nats drain failed", { err: error });
      await this.connection.close();
    }
  }
}
