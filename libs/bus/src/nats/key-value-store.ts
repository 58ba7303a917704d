import { jetstream, type JetStreamOptions } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { Kvm, KvWatchInclude, type KV, type KvEntry as NatsKvEntry } from "@nats-io/kv";
import { AppError, Code } from "@poseloop/core";
import type { KeyValueStore, KvEntry } from "../types.js";
import { fromNatsError } from "./errors.js";

/** A KeyValueStore on a JetStream KV bucket (file storage); revisions are the bucket stream's sequences. */
export class NatsKeyValueStore implements KeyValueStore {
  readonly #kv: KV;
  readonly #bucket: string;

  private constructor(kv: KV, bucket: string) {
    this.#kv = kv;
    this.#bucket = bucket;
  }

  static async open(connection: NatsConnection, bucket: string, history = 64, js: JetStreamOptions = {}): Promise<NatsKeyValueStore> {
    try {
      const kv = await new Kvm(jetstream(connection, js)).create(bucket, { history });
      return new NatsKeyValueStore(kv, bucket);
    } catch (error) {
      throw fromNatsError(error, `open key-value bucket ${bucket}`);
    }
  }

  async get(key: string): Promise<KvEntry | undefined> {
    try {
      const entry = await this.#kv.get(key);
      return entry === null || entry.operation !== "PUT" ? undefined : toEntry(entry);
    } catch (error) {
      throw fromNatsError(error, `read ${this.#bucket}/${key}`);
    }
  }

  async create(key: string, value: Uint8Array): Promise<number> {
    try {
      return await this.#kv.create(key, value);
    } catch (error) {
      const mapped = fromNatsError(error, `create ${this.#bucket}/${key}`);
      throw mapped.code === Code.ABORTED
        ? new AppError(Code.ABORTED, `${this.#bucket}/${key} already exists`, { cause: error })
        : mapped;
    }
  }

  async update(key: string, value: Uint8Array, expectedRevision: number): Promise<number> {
    try {
      return await this.#kv.update(key, value, expectedRevision);
    } catch (error) {
      throw fromNatsError(error, `update ${this.#bucket}/${key} at revision ${expectedRevision}`);
    }
  }

  async put(key: string, value: Uint8Array): Promise<number> {
    try {
      return await this.#kv.put(key, value);
    } catch (error) {
      throw fromNatsError(error, `write ${this.#bucket}/${key}`);
    }
  }

  async history(key: string): Promise<KvEntry[]> {
    try {
      const entries: KvEntry[] = [];
      const iterator = await this.#kv.history({ key });
      for await (const entry of iterator) {
        if (entry.operation === "PUT") entries.push(toEntry(entry));
      }
      return entries.sort((a, b) => a.revision - b.revision);
    } catch (error) {
      throw fromNatsError(error, `read history of ${this.#bucket}/${key}`);
    }
  }

  async *watch(key: string, signal: AbortSignal): AsyncGenerator<KvEntry> {
    if (signal.aborted) return;
    let iterator;
    try {
      iterator = await this.#kv.watch({ key, include: KvWatchInclude.LastValue });
    } catch (error) {
      throw fromNatsError(error, `watch ${this.#bucket}/${key}`);
    }
    const stop = (): void => iterator.stop();
    signal.addEventListener("abort", stop, { once: true });
    try {
      for await (const entry of iterator) {
        if (signal.aborted) break;
        if (entry.operation === "PUT") yield toEntry(entry);
      }
    } finally {
      signal.removeEventListener("abort", stop);
      iterator.stop();
    }
  }

  /**
   * Listing is a read (an ephemeral consumer over the bucket), so a listing that times out on a busy server is
   * tried once more before the caller sees UNAVAILABLE.
   */
  async keys(prefix = ""): Promise<string[]> {
    // A prefix ending at a token boundary ("ev.job-1.") lets the server filter ("ev.job-1.>").
    const filter = prefix.endsWith(".") && prefix.length > 1 ? `${prefix}>` : undefined;
    for (let attempt = 1; ; attempt++) {
      try {
        const keys: string[] = [];
        for await (const key of await this.#kv.keys(filter)) if (key.startsWith(prefix)) keys.push(key);
        return [...new Set(keys)].sort();
      } catch (error) {
        const mapped = fromNatsError(error, `list keys of ${this.#bucket}`);
        if (mapped.code !== Code.UNAVAILABLE || attempt >= 2) throw mapped;
      }
    }
  }
}

function toEntry(entry: NatsKvEntry): KvEntry {
  return { key: entry.key, value: entry.value, revision: entry.revision, createdAt: entry.created };
}
