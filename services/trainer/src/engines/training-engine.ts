import * as ort from "onnxruntime-node";
import { StepEngine, type ModelDefinition, type StepBatch, type StepResult, type StepRunnerOptions, type TrainingState } from "@poseloop/train";

export type EngineKind = "onnxruntime" | "pytorch";

/** A model's parameters and BatchNorm statistics by PyTorch-style name, in registry order. */
export interface EngineWeights {
  readonly params: Map<string, Float32Array>;
  readonly buffers: Map<string, Float32Array>;
}

/**
 * What a training run needs from the engine that takes its steps: micro-batches in, losses out, and the whole
 * training state (weights, optimizer slots, accumulators, counters) in and out, so checkpoints, exports and
 * fine-tuning work the same under either engine. Every method that may cross a process boundary is async.
 */
export interface TrainingEngine {
  readonly kind: EngineKind;
  /** What runs the steps, for progress events and logs: "pytorch 2.5.1 on cuda:0, fp16 autocast". */
  readonly description: string;
  /** The zoo's definition of the model the engine trains (export and inference graphs are built from it). */
  readonly model: ModelDefinition;
  /** Optimizer updates so far (skipped ones included). */
  readonly step: number;
  /** One micro-batch at learning rate `lr`; every gradAccumSteps-th call applies an update. */
  run(batch: StepBatch, lr: number): Promise<StepResult>;
  /** Copies of the current parameters and buffers. */
  weights(): Promise<EngineWeights>;
  /**
   * TRAIN.EMA: copies of the moving average of the parameters and buffers, the weights a run validates and
   * exports while the raw ones keep training; undefined without TRAIN.EMA.
   */
  averagedWeights(): Promise<EngineWeights | undefined>;
  /** A copy of the whole training state, keyed like libs/train's TrainingState. */
  exportState(): Promise<TrainingState>;
  /** Replaces the whole training state (every tensor must match the model's names and sizes). */
  importState(state: TrainingState): Promise<void>;
  /** Loads weights by name (fine-tuning); names starting with a `skip` prefix are left as they are. */
  loadWeights(weights: ReadonlyMap<string, Float32Array>, options?: { skip?: readonly string[] }): Promise<void>;
  release(): Promise<void>;
}

/** The onnxruntime engine (libs/train's StepEngine, in the calling thread) as a TrainingEngine. */
export class OrtTrainingEngine implements TrainingEngine {
  readonly kind = "onnxruntime";
  readonly engine: StepEngine;
  readonly description: string;

  constructor(engine: StepEngine, description = `onnxruntime ${ort.env.versions.common ?? ""} on cpu`) {
    this.engine = engine;
    this.description = description;
  }

  static async create(options: StepRunnerOptions): Promise<OrtTrainingEngine> {
    const replicas = options.replicas ?? 1;
    const description = [
      `onnxruntime ${ort.env.versions.common ?? ""} on ${options.device ?? "cpu"}`,
      ...(options.mixedPrecision === true ? ["fp16 with loss scaling"] : []),
      ...(replicas > 1 ? [`${replicas} replicas`] : []),
    ].join(", ");
    return new OrtTrainingEngine(await StepEngine.create(options), description);
  }

  get model(): ModelDefinition {
    return this.engine.model;
  }

  get step(): number {
    return this.engine.step;
  }

  run(batch: StepBatch, lr: number): Promise<StepResult> {
    return this.engine.run(batch, lr);
  }

  async weights(): Promise<EngineWeights> {
    return this.engine.weights();
  }

  async averagedWeights(): Promise<EngineWeights | undefined> {
    return this.engine.averagedWeights();
  }

  async exportState(): Promise<TrainingState> {
    return this.engine.exportState();
  }

  async importState(state: TrainingState): Promise<void> {
    this.engine.importState(state);
  }

  async loadWeights(weights: ReadonlyMap<string, Float32Array>, options: { skip?: readonly string[] } = {}): Promise<void> {
    this.engine.loadWeights(weights, options);
  }

  release(): Promise<void> {
    return this.engine.release();
  }
}
