import { AppError, Code, startModuleWorker, WorkerClient } from "@poseloop/core";
import type { PoseEstimatorOptions } from "@poseloop/estimator";
import type { FrameJob, FrameOutcome } from "@poseloop/estimator";
import type { ServingSpec } from "@poseloop/estimator";

interface PoolWorker {
  readonly client: WorkerClient;
  /** Batches in flight on it. */
  busy: number;
  /** Loading and warming up a version: its thread runs no batch until that is done. */
  loading: boolean;
}

/**
 * The inference workers: each has its own sessions of every loaded version (onnxruntime sessions are not
 * shared across threads), and batches go to the worker with the fewest batches in flight.
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
  async load(spec: ServingSpec, bytes: Uint8Array): Promise<void> {
    const existing = this.#loaded.get(spec.version);
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
    this.#loaded.set(spec.version, entry);
    try {
      await entry.ready;
    } catch (error) {
      if (this.#loaded.get(spec.version) === entry) this.#loaded.delete(spec.version);
      throw error;
    }
  }

  async #loadInWorkers(spec: ServingSpec, bytes: Uint8Array): Promise<void> {
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
      await this.#releaseInWorkers(spec.version);
      throw AppError.from(error, Code.FAILED_PRECONDITION);
    }
  }

  /** Gives up one owner's hold on `version`; the last one out releases its sessions in every worker. */
  async release(version: string): Promise<void> {
    const entry = this.#loaded.get(version);
    if (entry !== undefined) {
      entry.owners--;
      if (entry.owners > 0) return;
      this.#loaded.delete(version);
    }
    await this.#releaseInWorkers(version);
  }

  async #releaseInWorkers(version: string): Promise<void> {
    await Promise.allSettled(this.#workers.map(({ client }) => client.call<void>("release", { version })));
  }

  /** Runs one batch of frames on the least busy worker, one that is not loading a version where there is one. */
  async infer(version: string, frames: readonly FrameJob[]): Promise<FrameOutcome[]> {
    const cost = (w: PoolWorker): number => w.busy + (w.loading ? this.#workers.length + 1 : 0);
    const worker = this.#workers.reduce((best, w) => (cost(w) < cost(best) ? w : best));
    worker.busy++;
    try {
      return await worker.client.call<FrameOutcome[]>("infer", { version, frames });
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
