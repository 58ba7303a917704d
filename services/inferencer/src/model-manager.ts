import { create } from "@bufbuild/protobuf";
import { timestampNow, type Timestamp } from "@bufbuild/protobuf/wkt";
import { context as otelContext, SpanKind, trace, type Counter, type Link, type Histogram, type ObservableCallback, type ObservableGauge } from "@opentelemetry/api";
import { type ModelRegistry, type ServingEntry } from "@poseloop/bus";
import { AppError, AsyncQueue, Code, sleep, type Logger } from "@poseloop/core";
import { ServingStatus, type HealthService } from "@poseloop/grpc";
import { ModelRefSchema, type ModelManifest, type ModelRef } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { ServingEventKind, ServingState } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { linkTo, recordError, traceContextFromRecord, withSpan } from "@poseloop/telemetry";
import { servingSpecFromManifest, type ServingSpec } from "@poseloop/estimator";
import { loadFailuresCounter, servingGauge, swapDurationHistogram } from "./metrics.js";
import type { ServingHandle, VersionSource } from "./serving-handle.js";
import { followNewest } from "./follow-newest.js";

interface HandleState<Spec> {
  handle: ServingHandle<Spec>;
  inFlight: number;
  retired: boolean;
}

/** A serving-model event, as WatchServingModel streams it. */
export interface ServingEvent {
  readonly kind: ServingEventKind;
  readonly state: ServingState;
  readonly serving: ModelManifest | undefined;
  readonly candidate: ModelRef | undefined;
  readonly error: { code: number; message: string } | undefined;
  readonly time: Timestamp;
}

/** Loads versions into the inference workers and gives them back (the worker pool, for one kind of model). */
export interface VersionLoader<Spec> {
  load(spec: Spec, bytes: Uint8Array): Promise<void>;
  release(version: string): Promise<void>;
}

/**
 * The spec the workers load for a manifest, given the spec of the version serving now (undefined: none);
 * throws an AppError naming every reason the manifest cannot replace it.
 */
export type SpecOf<Spec> = (manifest: ModelManifest, current: Spec | undefined, modelName: string) => Spec;

export interface ModelManagerOptions<Spec = ServingSpec> {
  readonly registry: ModelRegistry;
  readonly pool: VersionLoader<Spec>;
  readonly modelName: string;
  readonly logger: Logger;
  /** The health the model's state sets; absent for a model the service can serve without (a person detector). */
  readonly health?: HealthService;
  /** Service names whose health follows the model (besides ""). */
  readonly healthServices: readonly string[];
  /** Largest artifact accepted. */
  readonly maxModelBytes: number;
  /** The manifest → spec check of this kind of model; default: a pose model's (`poseSpecOf`). */
  readonly specOf?: SpecOf<Spec>;
}

/** A pose model's spec: the manifest's contract, and the keypoint count of the version serving now (clients expect its schema). */
export function poseSpecOf(manifest: ModelManifest, current: ServingSpec | undefined, modelName: string): ServingSpec {
  const version = manifest.model?.version ?? "";
  const { spec, problems } = servingSpecFromManifest(manifest);
  if (spec === undefined) throw AppError.invalid(`manifest of ${modelName} ${version}`, problems);
  if (current !== undefined && current.numKeypoints !== spec.numKeypoints) {
    throw new AppError(Code.FAILED_PRECONDITION, `${modelName} ${version} predicts ${spec.numKeypoints} keypoints, the serving version ${current.version} ${current.numKeypoints}: clients expect the serving schema`);
  }
  return spec;
}

/**
 * Keeps the inferencer on the registry's serving version of its model: on every change it fetches the manifest
 * and the artifact (digest verified), checks the contract, loads and warms the version in every worker, then
 * swaps atomically. Batches keep the version they started on; the old version is released once its last batch
 * is back. A failed load leaves the current version serving and is reported (log, span, event).
 */
export class ModelManager<Spec extends { readonly version: string } = ServingSpec> implements VersionSource<Spec> {
  readonly #options: ModelManagerOptions<Spec>;
  readonly #specOf: SpecOf<Spec>;
  readonly #controller = new AbortController();
  #current: HandleState<Spec> | undefined;
  readonly #retired = new Set<HandleState<Spec>>();
  #state: ServingState = ServingState.WAITING;
  readonly #previous: ModelRef[] = [];
  readonly #watchers = new Set<AsyncQueue<ServingEvent>>();
  #loop: Promise<void> | undefined;
  readonly #swapDuration: Histogram;
  readonly #loadFailures: Counter;
  readonly #serving: ObservableGauge;
  readonly #observeServing: ObservableCallback = (result) => {
    const version = this.#current?.handle.version;
    if (version !== undefined) result.observe(1, { "poseloop.model.name": this.#options.modelName, "poseloop.model.version": version });
  };

  constructor(options: ModelManagerOptions<Spec>) {
    this.#options = options;
    // Without specOf the manager serves pose models (ModelManager's default Spec).
    this.#specOf = options.specOf ?? (poseSpecOf as unknown as SpecOf<Spec>);
    this.#swapDuration = swapDurationHistogram();
    this.#loadFailures = loadFailuresCounter();
    this.#serving = servingGauge();
  }

  /** Starts following the registry (in the background; reconnects and retries on bus errors). */
  start(): void {
    if (this.#loop === undefined) this.#serving.addCallback(this.#observeServing);
    this.#loop ??= this.#follow();
  }

  async stop(): Promise<void> {
    this.#serving.removeCallback(this.#observeServing);
    this.#controller.abort();
    for (const queue of this.#watchers) queue.close();
    await this.#loop?.catch(() => undefined);
  }

  /** The model name whose serving version this manager follows. */
  get modelName(): string {
    return this.#options.modelName;
  }

  get state(): ServingState {
    return this.#state;
  }

  get current(): ServingHandle<Spec> | undefined {
    return this.#current?.handle;
  }

  /** Versions served before, newest first. */
  get previous(): readonly ModelRef[] {
    return this.#previous;
  }

  acquire(): ServingHandle<Spec> | undefined {
    const current = this.#current;
    if (current === undefined) return undefined;
    current.inFlight++;
    return current.handle;
  }

  release(handle: ServingHandle<Spec>): void {
    const state = this.#current?.handle === handle ? this.#current : [...this.#retired].find((s) => s.handle === handle);
    if (state === undefined) return;
    state.inFlight--;
    if (state.retired && state.inFlight === 0) void this.#drain(state);
  }

  /** Resolves once a version serves (or rejects after `timeoutMs`). */
  async waitForServing(timeoutMs: number): Promise<ServingHandle<Spec>> {
    const deadline = Date.now() + timeoutMs;
    while (this.#current === undefined) {
      if (Date.now() > deadline) throw new AppError(Code.DEADLINE_EXCEEDED, `no version of ${this.#options.modelName} loaded within ${timeoutMs} ms`);
      await sleep(20, this.#controller.signal);
    }
    return this.#current.handle;
  }

  /** The state now, then every change, until `signal` aborts. */
  async *events(signal: AbortSignal): AsyncGenerator<ServingEvent> {
    const queue = new AsyncQueue<ServingEvent>({ limit: 256 });
    queue.push(this.#event(ServingEventKind.SNAPSHOT, undefined, undefined));
    this.#watchers.add(queue);
    try {
      yield* queue.iterate(signal);
    } finally {
      this.#watchers.delete(queue);
    }
  }

  async #follow(): Promise<void> {
    const { registry, modelName, logger } = this.#options;
    await followNewest((signal) => registry.watchServing(modelName, signal), (entry) => this.#load(entry), {
      signal: this.#controller.signal,
      onWatchError: (error, retryMs) => logger.warn("watching the serving version failed; retrying", { model: modelName, err: error, retry_ms: retryMs }),
    });
  }

  async #load(entry: ServingEntry): Promise<void> {
    const { modelName, logger } = this.#options;
    const ref = entry.record.model;
    const version = ref?.version ?? "";
    if (version === "" || version === this.#current?.handle.version) return;
    const publishContext = traceContextFromRecord(entry.record.traceContext, otelContext.active());
    const publishLink = linkTo(publishContext);
    const candidate = create(ModelRefSchema, ref ?? {});
    const started = performance.now();
    this.#state = this.#current === undefined ? ServingState.LOADING : this.#state;
    this.#emit(ServingEventKind.LOADING, candidate, undefined);
    await withSpan(
      trace.getTracer("@poseloop/inferencer"),
      "model.load",
      { kind: SpanKind.CONSUMER, links: publishLink === undefined ? [] : [publishLink], attributes: { "poseloop.model.name": modelName, "poseloop.model.version": version } },
      async (span) => {
        try {
          const handle = await this.loadVersion(candidate, publishLink, this.#controller.signal);
          const previous = this.#current;
          this.#current = { handle, inFlight: 0, retired: false };
          this.#swapDuration.record((performance.now() - started) / 1000, { "poseloop.model.name": modelName });
          this.#state = ServingState.SERVING;
          this.#setHealth(ServingStatus.SERVING);
          this.#emit(ServingEventKind.SWAPPED, candidate, undefined);
          logger.info("serving a new model version", { model: modelName, version, digest: handle.ref.digest, training_job_id: handle.trainingJobId, previous: previous?.handle.version });
          if (previous !== undefined) {
            this.#previous.unshift(previous.handle.ref);
            this.#previous.splice(20);
            previous.retired = true;
            this.#retired.add(previous);
            if (previous.inFlight === 0) await this.#drain(previous);
          }
        } catch (error) {
          const appError = AppError.from(error);
          recordError(span, error);
          this.#loadFailures.add(1, { "poseloop.model.name": modelName });
          if (this.#current === undefined) this.#state = ServingState.WAITING;
          logger.error("model version rejected; the current version keeps serving", { model: modelName, version, code: appError.code, err: error });
          this.#emit(ServingEventKind.LOAD_FAILED, candidate, { code: appError.code, message: appError.message });
        }
      },
    );
  }

  /**
   * Fetches `ref`'s manifest and artifact (digest verified), checks the contract (and the keypoint count of the
   * version serving now: clients expect its schema) and loads it in every worker, warmed up at the scheduler's
   * batch, without serving it. The caller owns the handle: it serves it, or gives it back with `unloadVersion`
   * (a canary or shadow trial's candidate loads this way, through the same checks as a serving version).
   * The active span gets the version's training job id.
   */
  async loadVersion(ref: ModelRef, publishLink: Link | undefined, signal: AbortSignal): Promise<ServingHandle<Spec>> {
    const { registry, pool, modelName } = this.#options;
    const version = ref.version;
    const manifest = await registry.getManifest(modelName, version, signal);
    trace.getActiveSpan()?.setAttribute("poseloop.training.job_id", manifest.trainingJobId);
    const spec = this.#specOf(manifest, this.#current?.handle.spec, modelName);
    const digest = manifest.model?.digest ?? "";
    const artifact = manifest.artifacts.find((a) => a.digest === digest);
    if (artifact === undefined) throw new AppError(Code.FAILED_PRECONDITION, `the manifest of ${modelName} ${version} lists no artifact with its serving digest ${digest}`);
    const bytes = await registry.getArtifact(artifact.objectName, { expectedDigest: digest, maxBytes: this.#options.maxModelBytes, signal });
    await pool.load(spec, bytes);
    return { version, manifest, spec, ref: manifest.model ?? ref, trainingJobId: manifest.trainingJobId, publishLink, loadedAt: timestampNow() };
  }

  /** Gives back a handle from `loadVersion` that never served (the pool keeps the version while others hold it). */
  async unloadVersion(handle: ServingHandle<Spec>): Promise<void> {
    await this.#options.pool.release(handle.version);
  }

  async #drain(state: HandleState<Spec>): Promise<void> {
    if (!this.#retired.delete(state)) return;
    await this.#options.pool.release(state.handle.version);
    this.#emit(ServingEventKind.DRAINED, state.handle.ref, undefined);
  }

  #setHealth(status: ServingStatus): void {
    const health = this.#options.health;
    if (health === undefined) return;
    health.setStatus("", status);
    for (const service of this.#options.healthServices) health.setStatus(service, status);
  }

  #event(kind: ServingEventKind, candidate: ModelRef | undefined, error: ServingEvent["error"]): ServingEvent {
    return { kind, state: this.#state, serving: this.#current?.handle.manifest, candidate, error, time: timestampNow() };
  }

  #emit(kind: ServingEventKind, candidate: ModelRef | undefined, error: ServingEvent["error"]): void {
    const event = this.#event(kind, candidate, error);
    for (const queue of this.#watchers) {
      // A watcher that stopped reading loses events rather than growing memory.
      queue.push(event);
    }
  }
}
