import { AppError, Code, startModuleWorker, WorkerClient } from "@poseloop/core";
import type { InferenceModelOptions } from "../compile/forward-graph.js";
import type { StepBatch, StepResult, StepRunnerOptions } from "./step-engine.js";

/**
 * Runs training steps in a worker thread, so that a step (tens of milliseconds to seconds of onnxruntime)
 * never blocks the event loop of the process that drives it. The worker owns the sessions and the whole
 * training state; the main thread sends batches and receives losses, state snapshots and exported models.
 */
export class StepRunner {
  readonly heatmapWidth: number;
  readonly heatmapHeight: number;
  readonly parameters: readonly { name: string; shape: readonly number[] }[];
  readonly #client: WorkerClient;

  private constructor(client: WorkerClient, info: { heatmapWidth: number; heatmapHeight: number; params: { name: string; shape: number[] }[] }) {
    this.#client = client;
    this.heatmapWidth = info.heatmapWidth;
    this.heatmapHeight = info.heatmapHeight;
    this.parameters = info.params;
  }

  /** Compiles the model's graphs and initializes its weights from options.seed, in a new worker. */
  static async create(options: StepRunnerOptions): Promise<StepRunner> {
    const client = new WorkerClient(startModuleWorker(import.meta.url, "./step-worker", { name: "poseloop-step-runner" }));
    try {
      return new StepRunner(client, await client.call("create", options));
    } catch (error) {
      await client.terminate();
      throw error;
    }
  }

  /**
   * Runs one micro-batch at learning rate `lr`. With `transfer`, the batch's buffers move to the worker (and
   * are unusable here afterwards) instead of being copied: use it for batches made for one step.
   */
  run(batch: StepBatch, lr: number, options: { transfer?: boolean } = {}): Promise<StepResult> {
    if (!Number.isFinite(lr) || lr < 0) return Promise.reject(new AppError(Code.INVALID_ARGUMENT, `learning rate must be a finite non-negative number, got ${lr}`));
    const arrays = [batch.images, batch.targets, batch.targetWeights, batch.teacher, ...Object.values(batch.lossInputs ?? {})];
    // Each buffer once: transferring the same one twice is an error.
    const buffers = [...new Set(arrays.filter((a): a is Float32Array => a !== undefined).map((a) => a.buffer as ArrayBuffer))];
    return this.#client.call("run", { batch, lr }, options.transfer === true ? buffers : []);
  }

  /** The complete training state, serialized bit-exactly (see encodeTrainingState). */
  exportState(): Promise<Uint8Array> {
    return this.#client.call("exportState");
  }

  /** Restores a state from exportState(); training continues exactly as if never interrupted. */
  importState(bytes: Uint8Array): Promise<void> {
    return this.#client.call("importState", bytes);
  }

  /** Overwrites parameters and buffers by name (fine-tuning from a model; `skip` leaves prefixes fresh). */
  loadWeights(weights: ReadonlyMap<string, Float32Array>, options: { skip?: readonly string[] } = {}): Promise<void> {
    return this.#client.call("loadWeights", { weights, ...(options.skip === undefined ? {} : { skip: [...options.skip] }) });
  }

  weights(): Promise<{ params: Map<string, Float32Array>; buffers: Map<string, Float32Array> }> {
    return this.#client.call("weights");
  }

  /** The moving average of the weights under options.ema (the model to validate and export); undefined without. */
  averagedWeights(): Promise<{ params: Map<string, Float32Array>; buffers: Map<string, Float32Array> } | undefined> {
    return this.#client.call("averagedWeights");
  }

  /** The deployable ONNX model of the current weights (BN folded), serialized. */
  exportInferenceModel(options: InferenceModelOptions = {}): Promise<Uint8Array> {
    return this.#client.call("inferenceModel", options);
  }

  /** Eval-mode heatmaps [n, K, h, w] of the current weights for crops [n, 3, H, W]. */
  predict(images: Float32Array, n: number): Promise<Float32Array> {
    return this.#client.call("predict", { images, n });
  }

  /** Every eval-mode output by name for crops [n, 3, H, W]: "heatmaps", or a detector's "centers", "sizes", "offsets". */
  predictOutputs(images: Float32Array, n: number): Promise<Record<string, Float32Array>> {
    return this.#client.call("predictOutputs", { images, n });
  }

  /** Releases the sessions and stops the worker. */
  async release(): Promise<void> {
    try {
      await this.#client.call("release");
    } finally {
      await this.#client.terminate();
    }
  }
}
