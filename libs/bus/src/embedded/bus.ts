import { mkdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { AppError, Code } from "@poseloop/core";
import type { Bus, EventBus } from "../types.js";
import { FsBlobStore } from "./blob-store.js";
import { FsEventBus } from "./event-bus.js";
import { FsJobQueue } from "./job-queue.js";
import { FsKeyValueStore } from "./key-value-store.js";

const BUCKET = /^[a-z0-9][a-z0-9_-]{0,63}$/;

/**
 * The bus for one machine without a NATS server: everything lives under one directory that the trainer and
 * the inferencer processes share (blobs/, kv/, events/, queues/).
 */
export class EmbeddedBus implements Bus {
  readonly kind = "embedded" as const;
  readonly location: string;
  #events: EventBus | undefined;

  private constructor(root: string) {
    this.location = root;
  }

  static async open(root: string): Promise<EmbeddedBus> {
    const absolute = resolve(root);
    await mkdir(absolute, { recursive: true });
    return new EmbeddedBus(absolute);
  }

  async blobStore(bucket: string) {
    return new FsBlobStore(join(this.location, "blobs", checkBucket(bucket)));
  }

  async keyValueStore(bucket: string, options: { history?: number } = {}) {
    return new FsKeyValueStore(join(this.location, "kv", checkBucket(bucket)), options.history);
  }

  async events(): Promise<EventBus> {
    this.#events ??= new FsEventBus(join(this.location, "events"));
    return this.#events;
  }

  async jobQueue(name: string, options: { ackWaitMs?: number; maxDeliveries?: number } = {}) {
    return new FsJobQueue(join(this.location, "queues", checkBucket(name)), options.ackWaitMs, options.maxDeliveries);
  }

  async close(): Promise<void> {
    // Nothing is held open between calls.
  }
}

function checkBucket(name: string): string {
  if (!BUCKET.test(name)) throw new AppError(Code.INVALID_ARGUMENT, `invalid bucket name ${JSON.stringify(name)}`);
  return name;
}
