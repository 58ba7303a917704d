import type { NatsConnection } from "@nats-io/nats-core";
import { silentLogger, type Logger } from "@poseloop/core";
import type { Bus, EventBus } from "../types.js";
import { NatsBlobStore } from "./blob-store.js";
import { connectNats, type NatsConnectOptions } from "./connection.js";
import { NatsEventBus } from "./event-bus.js";
import { NatsJobQueue } from "./job-queue.js";
import { NatsKeyValueStore } from "./key-value-store.js";

/** The bus on NATS JetStream: object stores, KV buckets, the events stream and work queues. */
export class NatsBus implements Bus {
  readonly kind = "nats" as const;
  readonly location: string;
  readonly connection: NatsConnection;
  #events: Promise<EventBus> | undefined;

  private constructor(connection: NatsConnection, location: string) {
    this.connection = connection;
    this.location = location;
  }

  static async connect(options: NatsConnectOptions): Promise<NatsBus> {
    const connection = await connectNats(options);
    const location = typeof options.servers === "string" ? options.servers : options.servers.join(",");
    return new NatsBus(connection, location);
  }

  blobStore(bucket: string) {
    return NatsBlobStore.open(this.connection, bucket);
  }

  keyValueStore(bucket: string, options: { history?: number } = {}) {
    return NatsKeyValueStore.open(this.connection, bucket, options.history);
  }

  events(): Promise<EventBus> {
    this.#events ??= NatsEventBus.open(this.connection);
    return this.#events;
  }

  jobQueue(name: string, options: { ackWaitMs?: number } = {}) {
    return NatsJobQueue.open(this.connection, name, options.ackWaitMs);
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
