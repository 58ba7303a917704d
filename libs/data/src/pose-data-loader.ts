import { AppError, Code, codeName, raceAbort, silentLogger, startModuleWorker, withDeadline, WorkerClient, type Logger } from "@poseloop/core";
import { COCO17, createKeypointCodec, schemaProblems, type KeypointCodec, type KeypointCodecSpec, type KeypointSchema, type Size } from "@poseloop/pose";
import { IMAGENET_NORMALIZATION, type TensorNormalization } from "@poseloop/vision";
import { augmentationProblems, resolveAugmentation, type AugmentationConfig } from "./augmentation.js";
import type { PoseInstance, ValidationImage } from "./coco-reader.js";
import type { ImageCacheOptions, ImageStoreStats } from "./decoded-image-store.js";
import { batchCount, epochOrder } from "./epoch-order.js";
import { sampleTableFromImages, sampleTableFromInstances } from "./sample-table.js";
import { TopDownBatchBuilder, type BadSamplePolicy, type BatchBuilderConfig, type BatchRequest, type PoseBatch } from "./top-down-batch.js";

/** Training instances (boxes with keypoints: targets are encoded) or validation boxes (GT or detections: no targets). */
export type PoseDataSource = { readonly instances: readonly PoseInstance[] } | { readonly boxes: readonly ValidationImage[] };

export interface PoseDataLoaderOptions {
  readonly source: PoseDataSource;
  /** The model input, e.g. 192 x 256. */
  readonly inputSize: Size;
  /** The codec the model trains with (its input size must be `inputSize`); UDP codecs get UDP crops. */
  readonly codec: KeypointCodecSpec;
  readonly batchSize: number;
  /**
   * "train" (default): augmentation allowed, shuffled, last partial batch dropped. "validation": no
   * augmentation, source order, last partial batch kept.
   */
  readonly mode?: "train" | "validation";
  /** Seeds the order and the augmentation: the same seed and epoch give the same batches, bit for bit. Default 0. */
  readonly seed?: number;
  /** Training only; default none. */
  readonly augmentation?: AugmentationConfig;
  /** Default: true in training, false in validation. */
  readonly shuffle?: boolean;
  /** Default: true in training, false in validation. */
  readonly dropLast?: boolean;
  /** Worker threads that build batches; 0 builds them in this thread (tests). Default 1. */
  readonly workers?: number;
  /** Batches queued per worker ahead of the consumer; bounds the memory held in batches. Default 2. */
  readonly prefetchPerWorker?: number;
  /** Default COCO17: its flip pairs swap under a flip, its names split the body for half-body crops. */
  readonly schema?: KeypointSchema;
  /** Context around each person box (both sides times this). Default 1.25. */
  readonly padding?: number;
  /** Default IMAGENET_NORMALIZATION. */
  readonly normalization?: TensorNormalization;
  /** In-memory LRU (per worker) and optional disk cache of decoded images. */
  readonly imageCache?: ImageCacheOptions;
  /**
   * "fail" (default): a bad sample (missing or corrupt image, NaN keypoint, empty box) fails the epoch with an
   * AppError naming the image. "skip": its slot is zeros with weight 0, it is listed in `batch.skipped`,
   * counted in `skippedSamples` and logged.
   */
  readonly badSamples?: BadSamplePolicy;
  /** Receives a warning per skipped sample. Default: silent. */
  readonly logger?: Logger;
  /** Deadline for one batch, counted from when it is queued on its worker (behind at most prefetchPerWorker − 1 others); default 120 s. */
  readonly batchTimeoutMs?: number;
  /** Deadline for starting a worker; default 60 s. */
  readonly startTimeoutMs?: number;
  /** Deadline for reading one image file; default 30 s. */
  readonly readTimeoutMs?: number;
  /** Closes the loader when aborted. */
  readonly signal?: AbortSignal;
}

export interface EpochOptions {
  /** The first batch to yield, to resume an interrupted epoch; default 0. */
  readonly startBatch?: number;
  /** Ends the epoch early (the iteration throws the abort's reason). */
  readonly signal?: AbortSignal;
}

type Settled = { readonly ok: true; readonly batch: PoseBatch } | { readonly ok: false; readonly error: unknown };

/** Something that builds batches: a worker thread, or this thread. */
interface BatchProducer {
  inFlight: number;
  produce(request: BatchRequest): Promise<PoseBatch>;
  stats(): Promise<ImageStoreStats | undefined>;
  close(): Promise<void>;
}

class InThreadProducer implements BatchProducer {
  inFlight = 0;
  readonly #builder: TopDownBatchBuilder;
  constructor(config: BatchBuilderConfig) {
    this.#builder = new TopDownBatchBuilder(config);
  }
  produce(request: BatchRequest): Promise<PoseBatch> {
    return this.#builder.build(request);
  }
  async stats(): Promise<ImageStoreStats> {
    return { ...this.#builder.images.stats };
  }
  async close(): Promise<void> {}
}

function stopWorker(client: WorkerClient): Promise<void> {
  return withDeadline(client.terminate(), 10_000, "stopping a data loader worker");
}

/** One worker thread; a worker that died or missed a deadline is replaced at the next batch. */
class WorkerProducer implements BatchProducer {
  inFlight = 0;
  readonly #config: BatchBuilderConfig;
  readonly #batchTimeoutMs: number;
  readonly #startTimeoutMs: number;
  readonly #name: string;
  #client: Promise<WorkerClient> | undefined;
  #closed = false;

  constructor(config: BatchBuilderConfig, name: string, timeouts: { batchMs: number; startMs: number }) {
    this.#config = config;
    this.#name = name;
    this.#batchTimeoutMs = timeouts.batchMs;
    this.#startTimeoutMs = timeouts.startMs;
  }

  start(): Promise<WorkerClient> {
    if (this.#closed) return Promise.reject(new AppError(Code.CANCELLED, "the data loader was closed"));
    if (this.#client === undefined) {
      const worker = startModuleWorker(import.meta.url, "./pose-loader-worker", { name: this.#name });
      const ready = this.#initialize(new WorkerClient(worker));
      this.#client = ready;
      const forget = (): void => {
        if (this.#client === ready) this.#client = undefined;
      };
      worker.once("exit", forget);
      ready.catch(forget);
    }
    return this.#client;
  }

  async #initialize(client: WorkerClient): Promise<WorkerClient> {
    try {
      await withDeadline(client.call("init", this.#config), this.#startTimeoutMs, "starting a data loader worker");
      return client;
    } catch (error) {
      await stopWorker(client);
      throw error;
    }
  }

  async produce(request: BatchRequest): Promise<PoseBatch> {
    const starting = this.start();
    const client = await starting;
    try {
      return await withDeadline(client.call<PoseBatch>("batch", request), this.#batchTimeoutMs, `building batch ${request.index} of epoch ${request.epoch}`);
    } catch (error) {
      // A worker past its deadline may be stuck: replace it rather than queue more work behind it.
      if (AppError.is(error, Code.DEADLINE_EXCEEDED) && this.#client === starting) {
        this.#client = undefined;
        await stopWorker(client);
      }
      throw error;
    }
  }

  async stats(): Promise<ImageStoreStats | undefined> {
    const client = await this.start();
    return withDeadline(client.call<ImageStoreStats | undefined>("stats"), this.#startTimeoutMs, "reading a data loader worker's cache statistics");
  }

  async close(): Promise<void> {
    this.#closed = true;
    const client = this.#client;
    this.#client = undefined;
    if (client === undefined) return;
    const started = await client.catch(() => undefined);
    if (started !== undefined) await stopWorker(started);
  }
}

/** Problems with loader options, every one at once. */
function optionProblems(options: PoseDataLoaderOptions, schema: KeypointSchema): string[] {
  const problems: string[] = [];
  const source = options.source as Partial<{ instances: unknown; boxes: unknown }>;
  const hasInstances = Array.isArray(source.instances);
  const hasBoxes = Array.isArray(source.boxes);
  if (hasInstances === hasBoxes) problems.push("source must hold either instances or boxes");
  const mode = options.mode ?? "train";
  if (mode !== "train" && mode !== "validation") problems.push(`mode must be "train" or "validation", got ${String(mode)}`);
  if (hasBoxes && mode === "train") problems.push("validation boxes (no keypoints) can only be loaded in validation mode");
  const { width, height } = options.inputSize;
  if (!(Number.isInteger(width) && width > 0 && Number.isInteger(height) && height > 0)) problems.push(`inputSize must be positive integers, got ${width}x${height}`);
  try {
    const codec = createKeypointCodec(options.codec);
    if (codec.inputSize.width !== width || codec.inputSize.height !== height) {
      problems.push(`the codec's input size ${codec.inputSize.width}x${codec.inputSize.height} differs from inputSize ${width}x${height}`);
    }
    if (codec.numKeypoints !== schema.names.length) problems.push(`the codec has ${codec.numKeypoints} keypoints, the schema ${schema.names.length}`);
  } catch (error) {
    problems.push(`codec: ${error instanceof Error ? error.message : String(error)}`);
  }
  problems.push(...schemaProblems(schema).map((problem) => `schema: ${problem}`));
  if (!(Number.isInteger(options.batchSize) && options.batchSize > 0)) problems.push(`batchSize must be a positive integer, got ${options.batchSize}`);
  if (options.seed !== undefined && !Number.isSafeInteger(options.seed)) problems.push(`seed must be a safe integer, got ${options.seed}`);
  if (options.augmentation !== undefined) {
    if (mode === "validation") problems.push("validation takes no augmentation");
    problems.push(...augmentationProblems(options.augmentation));
  }
  const workers = options.workers ?? 1;
  if (!(Number.isInteger(workers) && workers >= 0 && workers <= 64)) problems.push(`workers must be an integer from 0 to 64, got ${workers}`);
  const prefetch = options.prefetchPerWorker ?? 2;
  if (!(Number.isInteger(prefetch) && prefetch >= 1 && prefetch <= 16)) problems.push(`prefetchPerWorker must be an integer from 1 to 16, got ${prefetch}`);
  if (options.padding !== undefined && !(Number.isFinite(options.padding) && options.padding > 0)) problems.push(`padding must be a positive number, got ${options.padding}`);
  if (options.badSamples !== undefined && options.badSamples !== "fail" && options.badSamples !== "skip") {
    problems.push(`badSamples must be "fail" or "skip", got ${String(options.badSamples)}`);
  }
  const memoryBytes = options.imageCache?.memoryBytes;
  if (memoryBytes !== undefined && !(Number.isSafeInteger(memoryBytes) && memoryBytes >= 0)) problems.push(`imageCache.memoryBytes must be an integer >= 0, got ${memoryBytes}`);
  const diskDir = options.imageCache?.diskDir;
  if (diskDir !== undefined && (typeof diskDir !== "string" || diskDir.length === 0)) problems.push("imageCache.diskDir must be a non-empty path");
  for (const [name, value] of [["batchTimeoutMs", options.batchTimeoutMs], ["startTimeoutMs", options.startTimeoutMs], ["readTimeoutMs", options.readTimeoutMs]] as const) {
    if (value !== undefined && !(Number.isFinite(value) && value > 0)) problems.push(`${name} must be a positive number of milliseconds, got ${value}`);
  }
  return problems;
}

/** What every batch builder of a loader gets: the packed samples and the resolved options. */
function builderConfig(options: PoseDataLoaderOptions, schema: KeypointSchema): BatchBuilderConfig {
  const table =
    "instances" in options.source ? sampleTableFromInstances(options.source.instances, schema.names.length) : sampleTableFromImages(options.source.boxes);
  return {
    table,
    inputSize: { width: options.inputSize.width, height: options.inputSize.height },
    codec: options.codec,
    schema,
    padding: options.padding ?? 1.25,
    normalization: options.normalization ?? IMAGENET_NORMALIZATION,
    augmentation: options.augmentation === undefined ? undefined : resolveAugmentation(options.augmentation),
    seed: options.seed ?? 0,
    badSamples: options.badSamples ?? "fail",
    imageCache: { ...options.imageCache },
    readTimeoutMs: options.readTimeoutMs ?? 30_000,
  };
}

/**
 * The batches a PoseDataLoader with the same options yields, as requests (epoch, index, sample indices) with
 * the builder config that turns them into tensors: for a builder in another process, the PyTorch engine's
 * loader (services/trainer/pytorch/poseloop_torch/data), which builds the same batches in its own workers.
 */
export class PoseBatchPlan {
  readonly config: BatchBuilderConfig;
  readonly batchSize: number;
  readonly batchesPerEpoch: number;
  readonly #seed: number;
  readonly #shuffle: boolean;

  private constructor(options: PoseDataLoaderOptions, config: BatchBuilderConfig) {
    const training = (options.mode ?? "train") === "train";
    this.config = config;
    this.batchSize = options.batchSize;
    this.batchesPerEpoch = batchCount(config.table.count, options.batchSize, options.dropLast ?? training);
    this.#seed = options.seed ?? 0;
    this.#shuffle = options.shuffle ?? training;
  }

  /** Validates the options as PoseDataLoader.create does (every problem at once: INVALID_ARGUMENT). */
  static create(options: PoseDataLoaderOptions): PoseBatchPlan {
    const schema = options.schema ?? COCO17;
    const problems = optionProblems(options, schema);
    if (problems.length > 0) throw AppError.invalid("data loader options", problems);
    return new PoseBatchPlan(options, builderConfig(options, schema));
  }

  get sampleCount(): number {
    return this.config.table.count;
  }

  /** Batches startBatch..batchesPerEpoch−1 of `epoch`, exactly those PoseDataLoader.epoch builds. */
  requests(epoch: number, startBatch = 0): BatchRequest[] {
    const n = this.batchesPerEpoch;
    if (!(Number.isInteger(startBatch) && startBatch >= 0 && startBatch <= n)) {
      throw new AppError(Code.INVALID_ARGUMENT, `startBatch must be an integer from 0 to ${n}, got ${startBatch}`);
    }
    const order = epochOrder(this.sampleCount, this.#seed, epoch, this.#shuffle);
    return Array.from({ length: n - startBatch }, (_, i) => epochBatch(order, epoch, startBatch + i, this.batchSize));
  }
}

/** Batch `index` of an epoch's sample order. */
function epochBatch(order: Int32Array, epoch: number, index: number, batchSize: number): BatchRequest {
  return { epoch, index, samples: order.slice(index * batchSize, Math.min(order.length, (index + 1) * batchSize)) };
}

/**
 * Batches of top-down pose samples, built in worker threads: the crops [B, 3, H, W], the codec's targets and
 * the target weights [B, K], with each sample's crop region to take predictions back to the frame.
 *
 * The order is a function of (seed, epoch) and each sample's augmentation of (seed, epoch, sample index),
 * so `epoch(e, { startBatch: k })` yields exactly the batches k.. of an uninterrupted epoch e, whatever the
 * number of workers. Batches come out in order while the workers build up to `workers × prefetchPerWorker`
 * of them ahead; their buffers are transferred from the workers, never copied.
 */
export class PoseDataLoader {
  readonly batchSize: number;
  readonly sampleCount: number;
  readonly batchesPerEpoch: number;
  readonly inputSize: Size;
  readonly mode: "train" | "validation";
  /** A codec like the workers' (its targetShape, its decode for predictions). */
  readonly codec: KeypointCodec;
  readonly #producers: readonly BatchProducer[];
  readonly #prefetch: number;
  readonly #seed: number;
  readonly #shuffle: boolean;
  readonly #logger: Logger;
  readonly #closing = new AbortController();
  readonly #detachSignal: () => void;
  #active = false;
  #skipped = 0;

  private constructor(options: PoseDataLoaderOptions, producers: readonly BatchProducer[], sampleCount: number) {
    this.mode = options.mode ?? "train";
    const training = this.mode === "train";
    this.batchSize = options.batchSize;
    this.sampleCount = sampleCount;
    this.batchesPerEpoch = batchCount(sampleCount, options.batchSize, options.dropLast ?? training);
    this.inputSize = { width: options.inputSize.width, height: options.inputSize.height };
    this.codec = createKeypointCodec(options.codec);
    this.#producers = producers;
    this.#prefetch = options.prefetchPerWorker ?? 2;
    this.#seed = options.seed ?? 0;
    this.#shuffle = options.shuffle ?? training;
    this.#logger = options.logger ?? silentLogger;
    const signal = options.signal;
    const onAbort = (): void => void this.close().catch(() => undefined);
    signal?.addEventListener("abort", onAbort, { once: true });
    this.#detachSignal = () => signal?.removeEventListener("abort", onAbort);
  }

  /** Validates the options (every problem at once: INVALID_ARGUMENT) and starts the workers. */
  static async create(options: PoseDataLoaderOptions): Promise<PoseDataLoader> {
    const schema = options.schema ?? COCO17;
    const problems = optionProblems(options, schema);
    if (problems.length > 0) throw AppError.invalid("data loader options", problems);
    options.signal?.throwIfAborted();
    const config = builderConfig(options, schema);
    const { table } = config;
    const workers = options.workers ?? 1;
    if (workers === 0) return new PoseDataLoader(options, [new InThreadProducer(config)], table.count);
    const timeouts = { batchMs: options.batchTimeoutMs ?? 120_000, startMs: options.startTimeoutMs ?? 60_000 };
    const producers = Array.from({ length: workers }, (_, i) => new WorkerProducer(config, `poseloop-data-loader-${i}`, timeouts));
    const started = await Promise.allSettled(producers.map((producer) => producer.start()));
    const failed = started.find((result) => result.status === "rejected");
    if (failed !== undefined) {
      await Promise.allSettled(producers.map((producer) => producer.close()));
      throw AppError.from(failed.reason);
    }
    return new PoseDataLoader(options, producers, table.count);
  }

  /** Samples skipped as bad so far (policy "skip"). */
  get skippedSamples(): number {
    return this.#skipped;
  }

  /** The image caches' counters, summed over the workers. */
  async cacheStats(): Promise<ImageStoreStats> {
    const total: ImageStoreStats = { memoryHits: 0, diskHits: 0, decoded: 0, diskWriteFailures: 0 };
    for (const producer of this.#producers) {
      const stats = await producer.stats();
      if (stats === undefined) continue;
      total.memoryHits += stats.memoryHits;
      total.diskHits += stats.diskHits;
      total.decoded += stats.decoded;
      total.diskWriteFailures += stats.diskWriteFailures;
    }
    return total;
  }

  /**
   * The batches startBatch..batchesPerEpoch−1 of epoch `epoch`, in order. One epoch iterates at a time;
   * leaving the loop early (break, abort) is fine. A bad sample under "fail", a worker that dies or a batch
   * past its deadline ends the iteration with that AppError.
   */
  async *epoch(epoch: number, options: EpochOptions = {}): AsyncGenerator<PoseBatch, void, undefined> {
    if (this.#closing.signal.aborted) throw new AppError(Code.FAILED_PRECONDITION, "the data loader is closed");
    if (this.#active) throw new AppError(Code.FAILED_PRECONDITION, "another epoch of this data loader is still being iterated");
    const n = this.batchesPerEpoch;
    const start = options.startBatch ?? 0;
    if (!(Number.isInteger(start) && start >= 0 && start <= n)) {
      throw new AppError(Code.INVALID_ARGUMENT, `startBatch must be an integer from 0 to ${n}, got ${start}`);
    }
    const order = epochOrder(this.sampleCount, this.#seed, epoch, this.#shuffle);
    const signal = options.signal === undefined ? this.#closing.signal : AbortSignal.any([options.signal, this.#closing.signal]);
    const window = this.#producers.length * this.#prefetch;
    const pending = new Map<number, Promise<Settled>>();
    const dispatch = (index: number): void => {
      let producer = this.#producers[0]!;
      for (const candidate of this.#producers) if (candidate.inFlight < producer.inFlight) producer = candidate;
      producer.inFlight++;
      const settled = producer.produce(epochBatch(order, epoch, index, this.batchSize)).then(
        (batch): Settled => ({ ok: true, batch }),
        (error: unknown): Settled => ({ ok: false, error }),
      );
      pending.set(
        index,
        settled.finally(() => producer.inFlight--),
      );
    };
    this.#active = true;
    try {
      let next = start;
      for (let index = start; index < n; index++) {
        while (next < n && next - index < window) dispatch(next++);
        const settled = await raceAbort(pending.get(index)!, signal);
        pending.delete(index);
        if (!settled.ok) throw settled.error;
        for (const skipped of settled.batch.skipped) {
          this.#skipped++;
          this.#logger.warn("skipped a bad sample", { epoch, batch: index, sample: skipped.sampleIndex, imageId: skipped.imageId, code: codeName(skipped.code), reason: skipped.message });
        }
        yield settled.batch;
      }
    } finally {
      this.#active = false;
    }
  }

  /** Stops the workers; an epoch being iterated ends with CANCELLED. Safe to call twice. */
  async close(): Promise<void> {
    if (!this.#closing.signal.aborted) this.#closing.abort(new AppError(Code.CANCELLED, "the data loader was closed"));
    this.#detachSignal();
    await Promise.all(this.#producers.map((producer) => producer.close()));
  }
}
