import { AppError, Code, startModuleWorker, WorkerClient } from "@poseloop/core";
import type { PoseEstimatorOptions } from "@poseloop/estimator";
import type { FrameJob, FrameOutcome } from "@poseloop/estimator";
import type { ServingSpec } from "@poseloop/estimator";
import type { DetectorServingSpec } from "./detector-spec.js";
import type { VersionLoader } from "./model-manager.js";
import type { DetectionJob, DetectionOutcome } from "./person-detector.js";

/** The two kinds of model the workers hold; a pose version and a detector version may share a version string. */
type ModelKindName = "pose" | "detector";

function kindOf(spec: ServingSpec | DetectorServingSpec): ModelKindName {
  return "kind" in spec && spec.kind === "detector" ? "detector" : "pose";
}

interface PoolWorker {
  readonly client: WorkerClient;
  /** Batches in flight on it. */
  busy: number;
  /** Loading and warming up a version: its thread runs no batch until that is done. */
  loading: boolean;
}

/**
 * The inference workers: each has its own sessions of every loaded version (onnxruntime sessions are not
 * shared across threads), pose models and person detectors alike, and batches go to the worker with the fewest
 * batches in flight.
 */
export class InferenceWorkerPool {
  readonly #workers: PoolWorker[];
  #warmUpBatch = 1;
  /**
   * Loaded versions and how many owners hold each: the serving model and a trial's candidate load and release
   * independently, and a candidate that is promoted is the same version the serving side then loads, so a
   * version leaves the workers only when its last owner releases it.
   */
  readonly #loaded = new Map<string, { owners: number; ready: Promise<void> }>();
  /** The person detectors' side of the pool, for the detector's ModelManager. */
  readonly detectors: VersionLoader<DetectorServingSpec> = {
    load: (spec, bytes) => this.load(spec, bytes),
    release: (version) => this.release(version, "detector"),
  };

  private constructor(workers: WorkerClient[]) {
    this.#workers = workers.map((client) => ({ client, busy: 0, loading: false }));
  }

  static create(size: number, options: PoseEstimatorOptions): InferenceWorkerPool {
    const workers = Array.from({ length: size }, (_, i) => new WorkerClient(startModuleWorker(import.meta.url, "./inference-worker", { workerData: options, name: `poseloop-inference-${i}` })));
    return new InferenceWorkerPool(workers);
  }

  get size(): number {
    return this.#workers.length;
  }

  /** Versions loaded from now on must run batches of `people` crops (the scheduler's largest batch). */
  requireBatch(people: number): void {
    this.#warmUpBatch = Math.max(this.#warmUpBatch, Math.floor(people));
  }

  /**
   * Loads a version in every worker, each warming it up at the largest batch required; if any fails, the others
   * drop it again and the error is thrown. One worker at a time, and batches go to the others meanwhile: a
   * worker's thread is taken by its load and warm-up, and loading in all of them at once stalled every stream
   * for the length of a load at each swap. A version already loaded (or loading) gains an owner instead of
   * loading twice; each successful `load` is matched by one `release`.
   */
  async load(spec: ServingSpec | DetectorServingSpec, bytes: Uint8Array): Promise<void> {
    const key = `${kindOf(spec)}:${spec.version}`;
    const existing = this.#loaded.get(key);
    if (existing !== undefined) {
      existing.owners++;
      try {
        await existing.ready;
      } catch (error) {
        existing.owners--;
        throw error;
      }
      return;
    }
    const entry = { owners: 1, ready: this.#loadInWorkers(spec, bytes) };
    this.#loaded.set(key, entry);
    try {
      await entry.ready;
    } catch (error) {
      if (this.#loaded.get(key) === entry) this.#loaded.delete(key);
      throw error;
    }
  }

  async #loadInWorkers(spec: ServingSpec | DetectorServingSpec, bytes: Uint8Array): Promise<void> {
    const batch = this.#warmUpBatch;
    try {
      for (const worker of this.#workers) {
        worker.loading = true;
        try {
          await worker.client.call<void>("load", { spec, bytes, batch });
        } finally {
          worker.loading = false;
        }
      }
    } catch (error) {
      await this.#releaseInWorkers(spec.version, kindOf(spec));
      throw AppError.from(error, Code.FAILED_PRECONDITION);
    }
  }

  /** Gives up one owner's hold on `version`; the last one out releases its sessions in every worker. */
  async release(version: string, kind: ModelKindName = "pose"): Promise<void> {
    const key = `${kind}:${version}`;
    const entry = this.#loaded.get(key);
    if (entry !== undefined) {
      entry.owners--;
      if (entry.owners > 0) return;
      this.#loaded.delete(key);
    }
    await this.#releaseInWorkers(version, kind);
  }

  async #releaseInWorkers(version: string, kind: ModelKindName): Promise<void> {
    await Promise.allSettled(this.#workers.map(({ client }) => client.call<void>("release", { version, kind })));
  }

  /** Runs one batch of frames on the least busy worker, one that is not loading a version where there is one. */
  async infer(version: string, frames: readonly FrameJob[]): Promise<FrameOutcome[]> {
    return this.#call<FrameOutcome[]>("infer", { version, frames });
  }

  /** Runs one batch of frames through person detector `version`, as `infer` runs pose batches. */
  async detect(version: string, jobs: readonly DetectionJob[]): Promise<DetectionOutcome[]> {
    return this.#call<DetectionOutcome[]>("detect", { version, jobs });
  }

  async #call<T>(op: "infer" | "detect", args: unknown): Promise<T> {
    const cost = (w: PoolWorker): number => w.busy + (w.loading ? this.#workers.length + 1 : 0);
    const worker = this.#workers.reduce((best, w) => (cost(w) < cost(best) ? w : best));
    worker.busy++;
    try {
      return await worker.client.call<T>(op, args);
    } finally {
      worker.busy--;
    }
  }

  /** Batches the pool can run at once. */
  get idleWorkers(): number {
    return this.#workers.filter((w) => w.busy === 0).length;
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.#workers.map(async ({ client }) => {
      await client.call("close").catch(() => undefined);
      await client.terminate();
    }));
  }
}
