import { jetstream, type JetStreamOptions } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { Objm, setSha256Backend, StorageType, type ObjectInfo, type ObjectStore } from "@nats-io/obj";
import { AppError, Code } from "@poseloop/core";
import { chunksOf, fromNatsDigest } from "../digest.js";
import type { BlobInfo, BlobSource, BlobStore } from "../types.js";
import { fromNatsError } from "./errors.js";

// Node's native SHA-256 instead of the browser-safe JS one: several times faster on 64 MB artifacts.
setSha256Backend("native");

const CHUNK_BYTES = 512 * 1024;

/** A BlobStore on a JetStream object-store bucket (file storage, 512 KiB chunks). */
export class NatsBlobStore implements BlobStore {
  readonly #store: ObjectStore;

  private constructor(store: ObjectStore) {
    this.#store = store;
  }

  static async open(connection: NatsConnection, bucket: string, js: JetStreamOptions = {}): Promise<NatsBlobStore> {
    try {
      const store = await new Objm(jetstream(connection, js)).create(bucket, { storage: StorageType.File });
      return new NatsBlobStore(store);
    } catch (error) {
      throw fromNatsError(error, `open object store ${bucket}`);
    }
  }

  async put(name: string, source: BlobSource, options: { signal?: AbortSignal } = {}): Promise<BlobInfo> {
    // A buffer goes in whole (nats.js slices it into chunks itself); a stream is pulled chunk by chunk.
    const iterator = (source instanceof Uint8Array ? single(source) : chunksOf(source, CHUNK_BYTES))[Symbol.asyncIterator]();
    const signal = options.signal;
    const stream = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (signal?.aborted === true) {
          controller.error(new AppError(Code.CANCELLED, "upload cancelled"));
          return;
        }
        const next = await iterator.next();
        if (next.done === true) controller.close();
        else controller.enqueue(next.value);
      },
      async cancel() {
        await iterator.return?.(undefined);
      },
    });
    try {
      return toBlobInfo(await this.#store.put({ name, options: { max_chunk_size: CHUNK_BYTES } }, stream));
    } catch (error) {
      throw fromNatsError(error, `store ${name}`);
    }
  }

  async get(name: string, options: { signal?: AbortSignal } = {}): Promise<{ info: BlobInfo; data: AsyncIterable<Uint8Array> } | undefined> {
    let result;
    try {
      result = await this.#store.get(name);
    } catch (error) {
      throw fromNatsError(error, `read ${name}`);
    }
    if (result === null) return undefined;
    const { info, data, error } = result;
    const signal = options.signal;
    async function* read(): AsyncGenerator<Uint8Array> {
      const reader = data.getReader();
      try {
        for (;;) {
          if (signal?.aborted === true) throw new AppError(Code.CANCELLED, "download cancelled");
          const chunk = await reader.read();
          if (chunk.done) break;
          yield chunk.value;
        }
      } catch (cause) {
        // nats.js checks its own digest at the end of the object: a mismatch (corrupt chunks) is DATA_LOSS.
        throw fromNatsError(cause, `read ${name}`);
      } finally {
        await reader.cancel().catch(() => undefined);
      }
      const failure = await error;
      if (failure !== null && failure !== undefined) throw fromNatsError(failure, `read ${name}`);
    }
    return { info: toBlobInfo(info), data: read() };
  }

  async stat(name: string): Promise<BlobInfo | undefined> {
    try {
      const info = await this.#store.info(name);
      return info === null || info.deleted ? undefined : toBlobInfo(info);
    } catch (error) {
      throw fromNatsError(error, `stat ${name}`);
    }
  }

  async delete(name: string): Promise<void> {
    try {
      if ((await this.#store.info(name)) !== null) await this.#store.delete(name);
    } catch (error) {
      throw fromNatsError(error, `delete ${name}`);
    }
  }

  async list(prefix = ""): Promise<BlobInfo[]> {
    try {
      const infos = await this.#store.list();
      return infos
        .filter((info) => !info.deleted && info.name.startsWith(prefix))
        .map(toBlobInfo)
        .sort((a, b) => a.name.localeCompare(b.name));
    } catch (error) {
      throw fromNatsError(error, `list ${prefix}`);
    }
  }
}

async function* single(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  yield bytes;
}

function toBlobInfo(info: ObjectInfo): BlobInfo {
  return { name: info.name, sizeBytes: info.size, digest: fromNatsDigest(info.digest) };
}
