// What the engine's thread and a data-parallel helper replica (replica-worker.ts) send each other per step.

/** One shard of a batch, with the primary's current weights by parameter name. */
export interface ShardRequest {
  readonly params: ReadonlyMap<string, Float32Array>;
  readonly images: Float32Array;
  readonly targets: Float32Array;
  readonly targetWeights: Float32Array;
  readonly teacher?: Float32Array;
  readonly lossScale?: number;
}

/** The shard's loss and its gradients by parameter name. */
export interface ShardResult {
  readonly loss: number;
  readonly grads: Map<string, Float32Array>;
}
