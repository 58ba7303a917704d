import { AppError, Code, startModuleWorker, WorkerClient } from "@poseloop/core";
import type { PoseEstimatorOptions } from "@poseloop/estimator";
import type { FrameJob, FrameOutcome } from "@poseloop/estimator";
import type { ServingSpec } from "@poseloop/estimator";

/**
 * The inference workers: each has its own sessions of every loaded version (onnxruntime sessions are not
 * shared across threads), and batches go to the worker with the fewest batches in flight.
 */
export class InferenceWorkerPool {
  readonly #workers: { client: WorkerClient; busy: number }[];
  #warmUpBatch = 1;

  private constructor(workers: WorkerClient[]) {
    this.#workers = workers.map((client) => ({ client, busy: 0 }));
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
   * drop it again and the error is thrown.
   */
  async load(spec: ServingSpec, bytes: Uint8Array): Promise<void> {
    const batch = this.#warmUpBatch;
    const results = await Promise.allSettled(this.#workers.map(({ client }) => client.call<void>("load", { spec, bytes, batch })));
    const failure = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failure !== undefined) {
      await this.release(spec.version);
      throw AppError.from(failure.reason, Code.FAILED_PRECONDITION);
    }
  }

  async release(version: string): Promise<void> {
    await Promise.allSettled(this.#workers.map(({ client }) => client.call<void>("release", { version })));
  }

  /** Runs one batch of frames on the least busy worker. */
  async infer(version: string, frames: readonly FrameJob[]): Promise<FrameOutcome[]> {
    const worker = this.#workers.reduce((best, w) => (w.busy < best.busy ? w : best));
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
