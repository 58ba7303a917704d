// What the engine's thread and a data-parallel helper replica (replica-worker.ts) send each other per step.

/** One shard of a batch, with the primary's current weights by parameter name. */
export interface ShardRequest {
  readonly params: ReadonlyMap<string, Float32Array>;
  /** The shard's part of every per-sample input (batchInputs: images, targets, loss inputs), by graph input name. */
  readonly inputs: Readonly<Record<string, Float32Array>>;
  readonly lossScale?: number;
}

/** The shard's loss and its gradients by parameter name. */
export interface ShardResult {
  readonly loss: number;
  readonly grads: Map<string, Float32Array>;
}
