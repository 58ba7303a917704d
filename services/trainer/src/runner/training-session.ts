import { startModuleWorker, withDeadline, WorkerClient } from "@poseloop/core";
import type { ExportOutcome } from "../publication/model-export.js";
import type { RunInit, RunPosition, TrainChunk, ValidationOutcome } from "./training-run.js";

/**
 * The service-thread handle of a training run in its own worker thread: every onnxruntime call, image decode
 * and evaluation happens there. `cancel()` sets a shared flag the run checks between micro-batches, so a cancel
 * lands at the next step boundary even while a `train` call is running.
 */
export class TrainingSession {
  readonly #client: WorkerClient;
  readonly #flag: Int32Array;
  position: RunPosition;

  private constructor(client: WorkerClient, flag: Int32Array, position: RunPosition) {
    this.#client = client;
    this.#flag = flag;
    this.position = position;
  }

  static async start(init: Omit<RunInit, "cancelFlag">, name = "poseloop-training"): Promise<TrainingSession> {
    const client = new WorkerClient(startModuleWorker(import.meta.url, "./training-worker", { name }));
    const cancel = new SharedArrayBuffer(4);
    try {
      const position = await client.call<RunPosition>("init", { ...init, cancelFlag: cancel });
      return new TrainingSession(client, new Int32Array(cancel), position);
    } catch (error) {
      await client.terminate();
      throw error;
    }
  }

  async train(maxSteps: number): Promise<TrainChunk> {
    const chunk = await this.#client.call<TrainChunk>("train", { maxSteps });
    this.position = chunk.position;
    return chunk;
  }

  validate(): Promise<ValidationOutcome> {
    return this.#client.call<ValidationOutcome>("validate");
  }

  checkpoint(): Promise<{ id: string; bytes: Uint8Array; epoch: number; step: number; results: Uint8Array }> {
    return this.#client.call("checkpoint");
  }

  /**
   * Export → int8 → AP gate of the weights the run holds now, where they are (nothing crosses threads but the
   * artifacts); or of a checkpoint's weights the run no longer holds (an earlier best).
   */
  export(checkpoint?: Uint8Array): Promise<ExportOutcome> {
    return this.#client.call<ExportOutcome>("export", checkpoint === undefined ? {} : { checkpoint });
  }

  /** Asks the run to stop at the next step boundary (the running `train` call returns with `cancelled`). */
  cancel(): void {
    Atomics.store(this.#flag, 0, 1);
  }

  get cancelRequested(): boolean {
    return Atomics.load(this.#flag, 0) !== 0;
  }

  async close(): Promise<void> {
    try {
      await withDeadline(this.#client.call("close"), 30_000, "closing the training worker");
    } finally {
      await this.#client.terminate();
    }
  }
}
