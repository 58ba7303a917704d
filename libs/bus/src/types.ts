/** A stored blob: name, size and SHA-256 digest ("sha256:<64 hex>"). */
export interface BlobInfo {
  readonly name: string;
  readonly sizeBytes: number;
  readonly digest: string;
}

/** Bytes to store: a buffer, or a stream of chunks for files too large to hold twice. */
export type BlobSource = Uint8Array | AsyncIterable<Uint8Array>;

/**
 * Named, immutable-once-written blobs (model artifacts, manifests, checkpoints). Implementations compute the
 * digest while writing; readers verify it (see ModelRegistry.getArtifact).
 */
export interface BlobStore {
  /** Stores `source` under `name`, replacing any previous blob of that name. */
  put(name: string, source: BlobSource, options?: { signal?: AbortSignal }): Promise<BlobInfo>;
  /** The blob's info and a stream of its bytes; undefined when absent. */
  get(name: string, options?: { signal?: AbortSignal }): Promise<{ info: BlobInfo; data: AsyncIterable<Uint8Array> } | undefined>;
  stat(name: string): Promise<BlobInfo | undefined>;
  delete(name: string): Promise<void>;
  /** Blobs whose names start with `prefix`, sorted by name. */
  list(prefix?: string): Promise<BlobInfo[]>;
}

/** One value of a key at one revision. */
export interface KvEntry {
  readonly key: string;
  readonly value: Uint8Array;
  /** Increases with every write to the bucket; compare-and-set works on it. */
  readonly revision: number;
  readonly createdAt: Date;
}

/**
 * Keys with revisioned values and history, where every write can be a compare-and-set: the registry's
 * serving versions, the trainer's job records.
 */
export interface KeyValueStore {
  get(key: string): Promise<KvEntry | undefined>;
  /** Writes the first value of `key`; ABORTED when the key already has one. */
  create(key: string, value: Uint8Array): Promise<number>;
  /** Writes `key` if its revision is still `expectedRevision`; ABORTED (a stale write) otherwise. */
  update(key: string, value: Uint8Array, expectedRevision: number): Promise<number>;
  /** Writes `key` unconditionally. */
  put(key: string, value: Uint8Array): Promise<number>;
  /** Earlier values of `key`, oldest first, the current one last (bounded by the bucket's history depth). */
  history(key: string): Promise<KvEntry[]>;
  /** The current value (when there is one), then every later write, until `signal` aborts. */
  watch(key: string, signal: AbortSignal): AsyncIterable<KvEntry>;
  /** All keys with a value, optionally starting with `prefix`. */
  keys(prefix?: string): Promise<string[]>;
}

/** A message on the event bus. */
export interface BusMessage {
  readonly subject: string;
  readonly data: Uint8Array;
  /** Header names as sent (W3C traceparent and friends among them). */
  readonly headers: Readonly<Record<string, string>>;
}

/** Subject-based publish/subscribe with headers ("poseloop.models.<name>.published"). */
export interface EventBus {
  /** Publishes and waits until the bus has stored (JetStream) or accepted the message. */
  publish(subject: string, data: Uint8Array, headers?: Readonly<Record<string, string>>): Promise<void>;
  /** Messages published from now on whose subject matches `pattern` ("*" one token, ">" the rest). */
  subscribe(pattern: string, signal: AbortSignal): AsyncIterable<BusMessage>;
}

/** A job taken from a queue; the queue redelivers it unless it is acked before its lease runs out. */
export interface JobDelivery {
  readonly id: string;
  readonly data: Uint8Array;
  readonly headers: Readonly<Record<string, string>>;
  /** 1 on the first delivery, 2 after one redelivery, ... */
  readonly deliveryCount: number;
  /** Done: never deliver it again. */
  ack(): Promise<void>;
  /** Give it back for redelivery, after `delayMs`. */
  nak(delayMs?: number): Promise<void>;
  /** Still working: extends the lease by a full ack wait. */
  heartbeat(): Promise<void>;
  /** Give up on it for good (poison job). */
  term(): Promise<void>;
}

/**
 * A work queue shared by any number of consumers (trainer processes): each job goes to exactly one of them;
 * a job whose consumer dies without acking comes back to another after the ack wait.
 */
export interface JobQueue {
  /** Queues a job; enqueueing the same `dedupId` twice (within the dedup window) queues it once. */
  enqueue(job: { id: string; data: Uint8Array; headers?: Readonly<Record<string, string>>; dedupId?: string }): Promise<void>;
  /** The next job, waiting up to `waitMs`; undefined when none came. */
  next(options: { waitMs: number; signal?: AbortSignal }): Promise<JobDelivery | undefined>;
  /** How long a delivery stays leased without heartbeat or ack. */
  readonly ackWaitMs: number;
  /**
   * Deliveries a job gets at most (the first one included); after that it is never delivered again, so a job
   * that fails the same way every time cannot loop forever. Its consumer sees `deliveryCount === maxDeliveries`
   * on the last one.
   */
  readonly maxDeliveries: number;
}

/** Deliveries of a job when its queue was opened without `maxDeliveries`. */
export const DEFAULT_MAX_DELIVERIES = 5;

/** The transport behind a deployment: NATS JetStream, or the embedded single-machine bus. */
export interface Bus {
  readonly kind: "nats" | "embedded";
  /** Where it is: the NATS URL or the embedded bus's directory. */
  readonly location: string;
  blobStore(bucket: string): Promise<BlobStore>;
  keyValueStore(bucket: string, options?: { history?: number }): Promise<KeyValueStore>;
  events(): Promise<EventBus>;
  jobQueue(name: string, options?: { ackWaitMs?: number; maxDeliveries?: number }): Promise<JobQueue>;
  close(): Promise<void>;
}
