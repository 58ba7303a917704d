import * as ort from "onnxruntime-node";
import { encodeModel, type ModelProto } from "@poseloop/onnx";
import { AppError, Code, SeededRandom, startModuleWorker, WorkerClient } from "@poseloop/core";
import { buildInferenceModel, compileForwardGraph, type InferenceModelOptions } from "../compile/forward-graph.js";
import { IoNames } from "../compile/io-names.js";
import { compileReplicaGraphs, compileTrainingGraphs, type TrainingGraphConfig } from "../compile/training-graphs.js";
import { initialize } from "../nn/parameters.js";
import { accumulateAverage, checkEma, emaDecay, type EmaConfig } from "../optim/ema.js";
import { stepScalars, type ResolvedOptimizer } from "../optim/optimizer.js";
import { defineModel, type ModelConfig, type ModelDefinition } from "../zoo/model-config.js";
import type { ShardRequest, ShardResult } from "./replica-protocol.js";
import { nchwcBlockSize } from "./nchwc.js";
import type { LossScalerState, TrainingState } from "./training-state.js";

export type Device = "cpu" | "cuda" | "webgpu";

export interface StepRunnerOptions {
  readonly model: ModelConfig;
  readonly training: TrainingGraphConfig;
  /** Seeds the weight initialization. */
  readonly seed: number;
  readonly device?: Device;
  /** onnxruntime intra-op threads; 0 or absent: one per core. */
  readonly intraOpThreads?: number;
  /** fp16 compute with fp32 master weights and dynamic loss scaling; GPU execution providers only. */
  readonly mixedPrecision?: boolean;
  /** The dynamic loss scaler; defaults are torch.cuda.amp.GradScaler's. */
  readonly lossScaling?: LossScalingOptions;
  /**
   * Verification only (tests, CI without a GPU): runs the mixed-precision graphs on the CPU provider, which
   * computes their fp16 ops — some natively, the rest through casts onnxruntime inserts — slower than fp32.
   * The trainer never sets it: TRAIN.AMP on a CPU device is refused.
   */
  readonly emulateMixedPrecisionOnCpu?: boolean;
  /**
   * Data-parallel replicas (default 1). With R > 1 a batch holds R x training.batchSize samples: shard r is the
   * r-th block of batchSize, each shard runs forward and backward in its own thread (shard 0 in the engine's,
   * the rest in helper workers, each with intraOpThreads threads), and one update applies the sum of the
   * shards' gradients — DistributedDataParallel's semantics: BatchNorm normalizes each shard by its own
   * statistics and the running statistics follow shard 0. The update equals gradient accumulation over the
   * same shards bit for bit; it cannot be combined with gradAccumSteps > 1.
   */
  readonly replicas?: number;
  /**
   * On the CPU provider, run the training graphs' eligible convolutions through onnxruntime's blocked-layout
   * (NCHWc) kernels (default true; see conv2d's emitConv). false: standard ONNX Conv nodes only.
   */
  readonly blockedConvolutions?: boolean;
  /**
   * Keep an exponential moving average of the parameters and BatchNorm statistics (see EmaConfig), updated in
   * this thread after every update and kept in the training state; averagedWeights() reads it. It starts at
   * the initial weights, and again at the weights loadWeights() loads.
   */
  readonly ema?: EmaConfig;
}

export interface LossScalingOptions {
  /** Default 2^16. */
  readonly initScale?: number;
  /** Default 2. */
  readonly growthFactor?: number;
  /** Default 0.5. */
  readonly backoffFactor?: number;
  /** Finite updates in a row before the scale grows. Default 2000. */
  readonly growthInterval?: number;
}

/**
 * One micro-batch: images [B, 3, H, W] and what the model's loss compares its outputs with — a heatmap
 * model's targets [B, K, h, w] and target weights [B, K], or the inputs of a model's own loss (the detector's,
 * see detectionStepBatch) by name, with empty targets and weights.
 */
export interface StepBatch {
  readonly images: Float32Array;
  readonly targets: Float32Array;
  readonly targetWeights: Float32Array;
  /** Teacher heatmaps [B, K, h, w] under distillation. */
  readonly teacher?: Float32Array;
  /** The loss inputs of a model with an objective of its own (ModelDefinition.objective), by graph input name. */
  readonly lossInputs?: Readonly<Record<string, Float32Array>>;
}

/** A per-sample input of the training graphs: its name, what errors call it, one sample's shape, its data in a batch. */
export interface BatchInput {
  readonly name: string;
  readonly what: string;
  readonly shape: readonly number[];
  data(batch: StepBatch): Float32Array;
}

/**
 * The per-sample inputs of a model's training graphs, in the order the batch holds them: the images, then a
 * heatmap model's targets, target weights and (under distillation) teacher heatmaps, or a model objective's
 * loss inputs. Shared by the engine and its helper replicas, so a model with its own loss needs nothing else
 * to train with replicas, accumulation, EMA and checkpoints.
 */
export function batchInputs(model: ModelDefinition, training: Pick<TrainingGraphConfig, "distillation">): BatchInput[] {
  const { inputWidth: w, inputHeight: h, numKeypoints: k } = model.config;
  const images: BatchInput = { name: IoNames.images, what: "images", shape: [3, h, w], data: (batch) => batch.images };
  const objective = model.objective;
  if (objective !== undefined) {
    return [
      images,
      ...objective.lossInputs.map((input): BatchInput => ({
        name: input.name,
        what: input.name,
        shape: input.shape,
        data: (batch) => {
          const missing = objective.lossInputs.filter(({ name }) => batch.lossInputs?.[name] === undefined).map(({ name }) => name);
          if (missing.length > 0) throw new AppError(Code.INVALID_ARGUMENT, `the batch lacks the loss inputs ${missing.join(", ")} (StepBatch.lossInputs)`);
          return batch.lossInputs?.[input.name] as Float32Array;
        },
      })),
    ];
  }
  const heatmaps = [k, model.heatmapHeight, model.heatmapWidth];
  return [
    images,
    { name: IoNames.targets, what: "targets", shape: heatmaps, data: (batch) => batch.targets },
    { name: IoNames.targetWeights, what: "target weights", shape: [k], data: (batch) => batch.targetWeights },
    ...(training.distillation === undefined
      ? []
      : [
          {
            name: IoNames.teacher,
            what: "teacher heatmaps",
            shape: heatmaps,
            data: (batch: StepBatch) => {
              if (batch.teacher === undefined) throw new AppError(Code.INVALID_ARGUMENT, "distillation needs teacher heatmaps in every batch");
              return batch.teacher;
            },
          },
        ]),
  ];
}

export interface StepResult {
  /** This micro-batch's loss (not divided by the accumulation steps). */
  readonly loss: number;
  /** Whether this micro-batch completed an update. */
  readonly updated: boolean;
  /** Global gradient norm before clipping, for updates. */
  readonly gradNorm: number | undefined;
  /** The update's gradients before clipping, by parameter name, when the graphs expose them. */
  readonly gradients?: ReadonlyMap<string, Float32Array>;
  /** Updates so far (skipped ones included: the LR schedule moves on, as PyTorch's does). */
  readonly step: number;
  /** Mixed precision: whether this update was skipped for non-finite gradients. */
  readonly skipped?: boolean;
  /** Mixed precision: the loss scale the next micro-batch will use. */
  readonly lossScale?: number;
}

/**
 * The configuration the training graphs compile with: the run's, with its mixed precision and, on the CPU
 * provider in fp32, the channel block of the provider's blocked convolutions.
 */
export async function graphConfig(options: StepRunnerOptions): Promise<TrainingGraphConfig> {
  const mixedPrecision = options.mixedPrecision === true;
  const blocked = (options.device ?? "cpu") === "cpu" && !mixedPrecision && options.blockedConvolutions !== false;
  const block = blocked ? await nchwcBlockSize() : undefined;
  return { ...options.training, mixedPrecision, ...(block === undefined ? {} : { nchwcBlock: block }) };
}

/** The execution providers this onnxruntime-node build can use, checked before any session is created. */
export function checkDevice(device: Device, mixedPrecision: boolean, emulateOnCpu = false): void {
  const backends = ort.listSupportedBackends?.() ?? [{ name: "cpu", bundled: true }];
  const available = backends.filter((backend) => backend.name === "cpu" || backend.bundled).map((backend) => backend.name);
  if (!available.includes(device)) {
    throw new AppError(
      Code.FAILED_PRECONDITION,
      `execution provider ${device} is not available in this onnxruntime-node installation (available: ${available.join(", ")})`,
    );
  }
  if (mixedPrecision && device === "cpu" && !emulateOnCpu) {
    throw new AppError(
      Code.FAILED_PRECONDITION,
      "mixed precision (fp16) needs a GPU execution provider (cuda or webgpu): onnxruntime's CPU provider runs fp16 slower than fp32, and PoseLoop never falls back to fp32 silently",
    );
  }
}

/**
 * Runs training steps in the calling thread (the StepRunner puts it in a worker): compiles the model's
 * training graphs, owns their onnxruntime sessions, and keeps the whole training state between steps as
 * onnxruntime tensors, passed from one step's outputs to the next step's inputs without copies.
 */
export class StepEngine {
  readonly model: ModelDefinition;
  readonly optimizer: ResolvedOptimizer;
  readonly #options: StepRunnerOptions;
  readonly #step: ort.InferenceSession;
  readonly #accumulate: ort.InferenceSession | undefined;
  readonly #slots: readonly string[];
  readonly #k: number;
  #tensors = new Map<string, ort.Tensor>();
  /**
   * A second buffer for every state tensor a graph updates: a step writes its new state straight into these
   * (onnxruntime's pre-allocated outputs) and the two swap roles once it succeeded, so onnxruntime allocates
   * no state outputs and a failed step leaves the current state untouched. (onnxruntime-node 1.30 still copies
   * every output into a new ArrayBuffer for the result object; the engine drops those copies.)
   */
  readonly #spare = new Map<string, ort.Tensor>();
  #stepCount = 0;
  #microStep = 0;
  #scaler: LossScalerState | undefined;
  /** The loss scaler's settings, under mixed precision. */
  readonly #scaling: Required<LossScalingOptions> | undefined;
  #forward: ort.InferenceSession | undefined;
  readonly #replicated: Replicated | undefined;
  /** TRAIN.EMA: the moving average of every parameter and buffer, by state name (IoNames.emaParam/emaBuffer). */
  #average: Map<string, Float32Array> | undefined;

  private constructor(
    options: StepRunnerOptions,
    model: ModelDefinition,
    optimizer: ResolvedOptimizer,
    slots: readonly string[],
    step: ort.InferenceSession,
    accumulate: ort.InferenceSession | undefined,
    replicated?: Replicated,
  ) {
    this.#replicated = replicated;
    this.#options = options;
    this.model = model;
    this.optimizer = optimizer;
    this.#slots = slots;
    this.#step = step;
    this.#accumulate = accumulate;
    this.#k = options.training.gradAccumSteps ?? 1;
    this.#scaling = options.mixedPrecision === true ? scalingOptions(options) : undefined;
    if (this.#scaling !== undefined) this.#scaler = { scale: this.#scaling.initScale, goodSteps: 0, skippedSteps: 0 };
  }

  static async create(options: StepRunnerOptions): Promise<StepEngine> {
    return StepEngine.fromDefinition(defineModel(options.model), options);
  }

  /** An engine for a model definition built outside the zoo (tests, custom heads). */
  static async fromDefinition(model: ModelDefinition, options: StepRunnerOptions): Promise<StepEngine> {
    checkDevice(options.device ?? "cpu", options.mixedPrecision ?? false, options.emulateMixedPrecisionOnCpu ?? false);
    // Impossible loss-scaling settings fail before anything is compiled.
    if (options.mixedPrecision === true) scalingOptions(options);
    if (options.ema !== undefined) checkEma(options.ema);
    const replicas = options.replicas ?? 1;
    if (!Number.isInteger(replicas) || replicas < 1) throw new AppError(Code.INVALID_ARGUMENT, `replicas must be a positive integer, got ${replicas}`);
    const training = await graphConfig(options);
    if (replicas > 1) return StepEngine.#replicatedEngine(model, options, training, replicas);
    const graphs = compileTrainingGraphs(model, training);
    const sessionOptions = StepEngine.sessionOptions(options);
    const step = await ort.InferenceSession.create(encodeModel(graphs.step), sessionOptions);
    const accumulate = graphs.accumulate === undefined ? undefined : await ort.InferenceSession.create(encodeModel(graphs.accumulate), sessionOptions);
    const engine = new StepEngine(options, model, graphs.optimizer, graphs.slots, step, accumulate);
    engine.#initialize(options.seed);
    return engine;
  }

  static async #replicatedEngine(model: ModelDefinition, options: StepRunnerOptions, training: TrainingGraphConfig, replicas: number): Promise<StepEngine> {
    const graphs = compileReplicaGraphs(model, training, replicas);
    const sessionOptions = StepEngine.sessionOptions(options);
    const helpers = Array.from({ length: replicas - 1 }, (_, i) => new WorkerClient(startModuleWorker(import.meta.url, "./replica-worker", { name: `poseloop-replica-${i + 1}` })));
    const opened: ort.InferenceSession[] = [];
    try {
      const created = helpers.map((helper) => helper.call("create", { options, training, replicas }));
      const gradients = await ort.InferenceSession.create(encodeModel(graphs.gradients), sessionOptions);
      opened.push(gradients);
      const apply = await ort.InferenceSession.create(encodeModel(graphs.apply), sessionOptions);
      opened.push(apply);
      await Promise.all(created);
      const zeroAccumulators = Object.fromEntries(model.registry.params.map((spec) => [IoNames.accum(spec.name), zeros(spec.shape)]));
      const engine = new StepEngine(options, model, graphs.optimizer, graphs.slots, apply, undefined, { replicas, gradients, helpers, zeros: zeroAccumulators });
      engine.#initialize(options.seed);
      return engine;
    } catch (error) {
      await Promise.all([...opened.map((session) => session.release()), ...helpers.map((helper) => helper.terminate())]);
      throw error;
    }
  }

  /**
   * Session options of the training graphs. Pool threads do not spin-wait between kernels: they share the
   * cores with the data loader's workers, the validation session and whatever else runs on the node, and a
   * spinning thread that loses its core stalls the step (a little faster at best, far slower for minutes at a
   * time). No memory pattern either: with it, onnxruntime allocates the step's planned activation block afresh
   * on every run, and for a big model that block comes from the system each time, as page faults. The
   * measurements: docs/engine-notes.md, "Session options of the training graphs".
   */
  static sessionOptions(options: Pick<StepRunnerOptions, "device" | "intraOpThreads">): ort.InferenceSession.SessionOptions {
    return {
      executionProviders: [options.device ?? "cpu"],
      graphOptimizationLevel: "all",
      ...(options.intraOpThreads === undefined || options.intraOpThreads === 0 ? {} : { intraOpNumThreads: options.intraOpThreads }),
      enableMemPattern: false,
      extra: { session: { intra_op: { allow_spinning: "0" } } },
    };
  }

  get step(): number {
    return this.#stepCount;
  }

  /**
   * Runs one micro-batch at learning rate `lr`; every gradAccumSteps-th call applies the update (clipped,
   * through the optimizer).
   */
  async run(batch: StepBatch, lr: number): Promise<StepResult> {
    if (this.#replicated !== undefined) return this.#runReplicated(this.#replicated, batch, lr);
    const { batchSize } = this.#options.training;
    const feeds: Record<string, ort.Tensor> = {};
    for (const input of batchInputs(this.model, this.#options.training)) feeds[input.name] = tensor(input.data(batch), [batchSize, ...input.shape], input.what);
    const final = this.#microStep === this.#k - 1;
    const session = final ? this.#step : (this.#accumulate as ort.InferenceSession);
    if (this.#scaler !== undefined) feeds[IoNames.lossScale] = scalar(this.#scaler.scale);
    if (final) this.#feedUpdateScalars(feeds, lr);
    this.#feedState(session, feeds);
    const fetches = this.#fetches(session);
    const outputs = await session.run(feeds, fetches);
    const loss = Number((outputs[IoNames.loss]?.data as Float32Array)[0]);
    this.#swapState(fetches);
    if (final) {
      this.#microStep = 0;
      if (this.#k > 1) this.#zeroAccumulators();
      return this.#updated(outputs, loss);
    }
    this.#microStep++;
    return { loss, updated: false, gradNorm: undefined, step: this.#stepCount, ...(this.#scaler === undefined ? {} : { lossScale: this.#scaler.scale }) };
  }

  /** One data-parallel step: the shards' forward and backward at once, then one update of their summed gradients. */
  async #runReplicated(replicated: Replicated, batch: StepBatch, lr: number): Promise<StepResult> {
    const { replicas, gradients, helpers, zeros } = replicated;
    const { batchSize } = this.#options.training;
    // Every input checked whole first; then shard r is the r-th block of batchSize samples of each.
    const inputs = batchInputs(this.model, this.#options.training).map((input) => {
      const data = input.data(batch);
      tensor(data, [replicas * batchSize, ...input.shape], input.what);
      return { input, data, size: batchSize * input.shape.reduce((a, b) => a * b, 1) };
    });
    const lossScale = this.#scaler?.scale;
    // The helpers start first (posting copies their inputs), then this thread runs shard 0 meanwhile.
    const params = new Map(this.model.registry.params.map((spec) => [spec.name, this.#tensors.get(IoNames.param(spec.name))?.data as Float32Array]));
    const pending = helpers.map((helper, i) => {
      const r = i + 1;
      const request: ShardRequest = {
        params,
        inputs: Object.fromEntries(inputs.map(({ input, data, size }) => [input.name, data.slice(r * size, (r + 1) * size)])),
        ...(lossScale === undefined ? {} : { lossScale }),
      };
      return helper.call<ShardResult>("run", request, Object.values(request.inputs).map((data) => data.buffer as ArrayBuffer));
    });
    const feeds: Record<string, ort.Tensor> = { ...zeros };
    for (const { input, data, size } of inputs) feeds[input.name] = new ort.Tensor("float32", data.subarray(0, size), [batchSize, ...input.shape]);
    if (lossScale !== undefined) feeds[IoNames.lossScale] = scalar(lossScale);
    this.#feedState(gradients, feeds);
    const ownFetches = this.#fetches(gradients);
    let own: ort.InferenceSession.OnnxValueMapType;
    let settled: PromiseSettledResult<ShardResult>[];
    try {
      own = await gradients.run(feeds, ownFetches);
    } finally {
      // Every helper's answer is awaited even when a shard failed, so none is left running into the next step.
      settled = await Promise.allSettled(pending);
    }
    const failed = settled.find((result): result is PromiseRejectedResult => result.status === "rejected");
    if (failed !== undefined) throw failed.reason;
    const others = settled.map((result) => (result as PromiseFulfilledResult<ShardResult>).value);
    const applyFeeds: Record<string, ort.Tensor> = {};
    for (const spec of this.model.registry.params) {
      applyFeeds[IoNames.shardGrad(0, spec.name)] = own[IoNames.accumOut(spec.name)] as ort.Tensor;
      others.forEach((result, i) => (applyFeeds[IoNames.shardGrad(i + 1, spec.name)] = new ort.Tensor("float32", result.grads.get(spec.name) as Float32Array, spec.shape)));
    }
    this.#feedUpdateScalars(applyFeeds, lr);
    this.#feedState(this.#step, applyFeeds);
    const applyFetches = this.#fetches(this.#step);
    const outputs = await this.#step.run(applyFeeds, applyFetches);
    this.#swapState(ownFetches);
    this.#swapState(applyFetches);
    // The batch's loss: the mean of the shards' means (equal shards).
    const loss = [Number((own[IoNames.loss]?.data as Float32Array)[0]), ...others.map((result) => result.loss)].reduce((a, b) => a + b, 0) / replicas;
    return this.#updated(outputs, loss);
  }

  /** Feeds every input of `session` that `feeds` lacks from the training state (weights, slots, statistics). */
  #feedState(session: ort.InferenceSession, feeds: Record<string, ort.Tensor>): void {
    for (const name of session.inputNames) {
      if (feeds[name] !== undefined) continue;
      const value = this.#tensors.get(name);
      if (value !== undefined) feeds[name] = value;
    }
  }

  /**
   * What `session.run` fetches: each output that is a state tensor's next value goes into that tensor's spare
   * buffer; the others (loss, norms, gradients) onnxruntime allocates.
   */
  #fetches(session: ort.InferenceSession): Record<string, ort.Tensor | null> {
    const fetches: Record<string, ort.Tensor | null> = {};
    for (const name of session.outputNames) {
      const input = stateInputName(name);
      const current = input === undefined ? undefined : this.#tensors.get(input);
      if (input === undefined || current === undefined) {
        fetches[name] = null;
        continue;
      }
      let spare = this.#spare.get(input);
      if (spare === undefined) {
        spare = zeros(current.dims);
        this.#spare.set(input, spare);
      }
      fetches[name] = spare;
    }
    return fetches;
  }

  /** After a run with `fetches` (from #fetches): the state outputs written become the state, the replaced buffers the spares. */
  #swapState(fetches: Record<string, ort.Tensor | null>): void {
    for (const [name, written] of Object.entries(fetches)) {
      if (written === null) continue;
      const input = stateInputName(name) as string;
      this.#spare.set(input, this.#tensors.get(input) as ort.Tensor);
      this.#tensors.set(input, written);
    }
  }

  /** The update's scalars at learning rate `lr`; Adam's t counts the updates applied (skipped ones are not). */
  #feedUpdateScalars(feeds: Record<string, ort.Tensor>, lr: number): void {
    const scalars = stepScalars(this.optimizer, lr, this.#stepCount - (this.#scaler?.skippedSteps ?? 0) + 1);
    feeds[IoNames.lr] = scalar(scalars.lr);
    feeds[IoNames.adamStepSize] = scalar(scalars.adamStepSize);
    feeds[IoNames.adamSqrtBc2] = scalar(scalars.adamSqrtBc2);
  }

  /** Counts an update that `outputs` (of a graph ending in the optimizer) made, and reports it. */
  #updated(outputs: ort.InferenceSession.OnnxValueMapType, loss: number): StepResult {
    this.#stepCount++;
    this.#updateAverage();
    const gradNorm = Number((outputs[IoNames.gradNorm]?.data as Float32Array)[0]);
    const scaling = this.#scaler === undefined ? {} : this.#updateScale(Boolean((outputs[IoNames.gradsFinite]?.data as Uint8Array | boolean[])[0]));
    if (this.#options.training.exposeGradients !== true) return { loss, updated: true, gradNorm, step: this.#stepCount, ...scaling };
    const gradients = new Map<string, Float32Array>();
    for (const spec of this.model.registry.params) gradients.set(spec.name, outputs[IoNames.grad(spec.name)]?.data as Float32Array);
    return { loss, updated: true, gradNorm, step: this.#stepCount, gradients, ...scaling };
  }

  /** GradScaler.update(): back off and skip on an overflow, grow after growthInterval finite updates in a row. */
  #updateScale(finite: boolean): { skipped: boolean; lossScale: number } {
    const options = this.#scaling as Required<LossScalingOptions>;
    const current = this.#scaler as LossScalerState;
    if (!finite) {
      this.#scaler = { scale: current.scale * options.backoffFactor, goodSteps: 0, skippedSteps: current.skippedSteps + 1 };
    } else if (current.goodSteps + 1 >= options.growthInterval) {
      this.#scaler = { scale: current.scale * options.growthFactor, goodSteps: 0, skippedSteps: current.skippedSteps };
    } else {
      this.#scaler = { ...current, goodSteps: current.goodSteps + 1 };
    }
    return { skipped: !finite, lossScale: this.#scaler.scale };
  }

  /** A copy of the whole training state. */
  exportState(): TrainingState {
    const tensors = new Map<string, Float32Array>();
    for (const [name, value] of this.#tensors) tensors.set(name, Float32Array.from(value.data as Float32Array));
    for (const [name, value] of this.#average ?? []) tensors.set(name, Float32Array.from(value));
    return { step: this.#stepCount, microStep: this.#microStep, tensors, ...(this.#scaler === undefined ? {} : { lossScaler: { ...this.#scaler } }) };
  }

  /** Replaces the training state (every tensor must match the model's names and sizes). */
  importState(state: TrainingState): void {
    const next = new Map<string, ort.Tensor>();
    for (const [name, value] of this.#tensors) {
      const data = state.tensors.get(name);
      if (data === undefined) throw new AppError(Code.INVALID_ARGUMENT, `the state has no tensor ${name}`);
      if (data.length !== value.data.length) throw new AppError(Code.INVALID_ARGUMENT, `tensor ${name} has ${data.length} values, the model needs ${value.data.length}`);
      next.set(name, new ort.Tensor("float32", Float32Array.from(data), value.dims));
    }
    if (!Number.isInteger(state.microStep) || state.microStep < 0 || state.microStep >= this.#k) {
      throw new AppError(Code.INVALID_ARGUMENT, `micro-step ${state.microStep} is outside 0..${this.#k - 1}`);
    }
    const average = this.#average === undefined ? undefined : this.#importedAverage(state, next);
    if (this.#scaler !== undefined) {
      // A state saved without mixed precision continues with a fresh scaler (its updates were all applied).
      const scaler = state.lossScaler ?? { scale: (this.#scaling as Required<LossScalingOptions>).initScale, goodSteps: 0, skippedSteps: 0 };
      if (scaler.skippedSteps > state.step) throw new AppError(Code.INVALID_ARGUMENT, `the state skipped ${scaler.skippedSteps} of its ${state.step} updates`);
      this.#scaler = { ...scaler };
    }
    this.#tensors = next;
    this.#stepCount = state.step;
    this.#microStep = state.microStep;
    this.#average = average;
  }

  /**
   * The moving average a state continues with: its own, or, from a state saved without one (TRAIN.EMA turned
   * on at a resume, fine-tuning weights), a fresh one at the state's weights. Part of one is refused.
   */
  #importedAverage(state: TrainingState, weights: ReadonlyMap<string, ort.Tensor>): Map<string, Float32Array> {
    const names = this.#averagedNames();
    const given = names.filter(([name]) => state.tensors.has(name));
    if (given.length === 0) return new Map(names.map(([name, source]) => [name, Float32Array.from((weights.get(source) as ort.Tensor).data as Float32Array)]));
    if (given.length < names.length) throw new AppError(Code.INVALID_ARGUMENT, `the state has ${given.length} of the ${names.length} moving-average tensors (ema:...)`);
    const average = new Map<string, Float32Array>();
    for (const [name, source] of names) {
      const data = state.tensors.get(name) as Float32Array;
      const size = (weights.get(source) as ort.Tensor).data.length;
      if (data.length !== size) throw new AppError(Code.INVALID_ARGUMENT, `tensor ${name} has ${data.length} values, the model needs ${size}`);
      average.set(name, Float32Array.from(data));
    }
    return average;
  }

  /** [moving-average name, the state tensor it averages] for every parameter and buffer. */
  #averagedNames(): [string, string][] {
    return [
      ...this.model.registry.params.map((spec): [string, string] => [IoNames.emaParam(spec.name), IoNames.param(spec.name)]),
      ...this.model.registry.buffers.map((spec): [string, string] => [IoNames.emaBuffer(spec.name), IoNames.buffer(spec.name)]),
    ];
  }

  /** Starts the moving average (when on) at the current weights. */
  #resetAverage(): void {
    if (this.#options.ema === undefined) return;
    this.#average = new Map(this.#averagedNames().map(([name, source]) => [name, Float32Array.from(this.#tensors.get(source)?.data as Float32Array)]));
  }

  /** One update of the moving average (when on), toward the weights the update just made. */
  #updateAverage(): void {
    if (this.#average === undefined || this.#options.ema === undefined) return;
    const d = emaDecay(this.#options.ema, this.#stepCount);
    for (const [name, source] of this.#averagedNames()) accumulateAverage(this.#average.get(name) as Float32Array, this.#tensors.get(source)?.data as Float32Array, d);
  }

  /** Loads weights by PyTorch-style name (fine-tuning, fixtures); names not in the model are refused. */
  loadWeights(weights: ReadonlyMap<string, Float32Array>, options: { skip?: readonly string[] } = {}): void {
    for (const [name, data] of weights) {
      if (options.skip?.some((prefix) => name.startsWith(prefix)) === true) continue;
      const key = this.#tensors.has(IoNames.param(name)) ? IoNames.param(name) : IoNames.buffer(name);
      const current = this.#tensors.get(key);
      if (current === undefined) throw new AppError(Code.INVALID_ARGUMENT, `the model has no parameter or buffer ${name}`);
      if (current.data.length !== data.length) throw new AppError(Code.INVALID_ARGUMENT, `${name} has ${data.length} values, the model needs ${current.data.length}`);
      this.#tensors.set(key, new ort.Tensor("float32", Float32Array.from(data), current.dims));
    }
    this.#resetAverage();
  }

  /** A copy of the current parameters and buffers by name (the engine's own buffers are rewritten by later steps). */
  weights(): { params: Map<string, Float32Array>; buffers: Map<string, Float32Array> } {
    const params = new Map<string, Float32Array>();
    const buffers = new Map<string, Float32Array>();
    for (const spec of this.model.registry.params) params.set(spec.name, Float32Array.from(this.#tensors.get(IoNames.param(spec.name))?.data as Float32Array));
    for (const spec of this.model.registry.buffers) buffers.set(spec.name, Float32Array.from(this.#tensors.get(IoNames.buffer(spec.name))?.data as Float32Array));
    return { params, buffers };
  }

  /** A copy of the moving average of the parameters and buffers by name (TRAIN.EMA); undefined when off. */
  averagedWeights(): { params: Map<string, Float32Array>; buffers: Map<string, Float32Array> } | undefined {
    const average = this.#average;
    if (average === undefined) return undefined;
    const params = new Map(this.model.registry.params.map((spec) => [spec.name, Float32Array.from(average.get(IoNames.emaParam(spec.name)) as Float32Array)] as const));
    const buffers = new Map(this.model.registry.buffers.map((spec) => [spec.name, Float32Array.from(average.get(IoNames.emaBuffer(spec.name)) as Float32Array)] as const));
    return { params, buffers };
  }

  /** The inference model of the current weights (BN folded, dynamic batch). */
  inferenceModel(options: InferenceModelOptions = {}): ModelProto {
    return buildInferenceModel(this.model, this.weights(), options);
  }

  /** Eval-mode heatmaps of the current weights for `images` [n, 3, H, W] (a detector's: its center probabilities). */
  async predict(images: Float32Array, n: number): Promise<Float32Array> {
    // The first output: the only one of a heatmap model, the detector's centers.
    return Object.values(await this.predictOutputs(images, n))[0] as Float32Array;
  }

  /** Every eval-mode output of the current weights for `images` [n, 3, H, W], by name ("heatmaps"; a detector's "centers", "sizes", "offsets"). */
  async predictOutputs(images: Float32Array, n: number): Promise<Record<string, Float32Array>> {
    this.#forward ??= await ort.InferenceSession.create(encodeModel(compileForwardGraph(this.model, { batch: "batch", mode: "eval" })), StepEngine.sessionOptions(this.#options));
    const feeds: Record<string, ort.Tensor> = {
      [IoNames.images]: tensor(images, [n, 3, this.model.config.inputHeight, this.model.config.inputWidth], "images"),
    };
    this.#feedState(this.#forward, feeds);
    const outputs = await this.#forward.run(feeds);
    return Object.fromEntries(this.#forward.outputNames.map((name) => [name, Float32Array.from(outputs[name]?.data as Float32Array)]));
  }

  async release(): Promise<void> {
    await this.#step.release();
    await this.#accumulate?.release();
    await this.#forward?.release();
    if (this.#replicated !== undefined) {
      await this.#replicated.gradients.release();
      await Promise.all(this.#replicated.helpers.map(async (helper) => {
        try {
          await helper.call("release");
        } finally {
          await helper.terminate();
        }
      }));
    }
  }

  #initialize(seed: number): void {
    const random = SeededRandom.fromSeed32(seed);
    for (const spec of this.model.registry.params) this.#tensors.set(IoNames.param(spec.name), new ort.Tensor("float32", initialize(spec, random), spec.shape));
    for (const spec of this.model.registry.buffers) this.#tensors.set(IoNames.buffer(spec.name), new ort.Tensor("float32", initialize(spec, random), spec.shape));
    for (const spec of this.model.registry.params) {
      for (const slot of this.#slots) this.#tensors.set(IoNames.slot(slot, spec.name), zeros(spec.shape));
    }
    if (this.#k > 1) this.#zeroAccumulators();
    this.#resetAverage();
  }

  #zeroAccumulators(): void {
    for (const spec of this.model.registry.params) {
      const current = this.#tensors.get(IoNames.accum(spec.name));
      if (current === undefined) this.#tensors.set(IoNames.accum(spec.name), zeros(spec.shape));
      else (current.data as Float32Array).fill(0);
    }
  }
}

/** The loss scaler's settings with GradScaler's defaults; throws INVALID_ARGUMENT for impossible ones. */
function scalingOptions(options: StepRunnerOptions): Required<LossScalingOptions> {
  const given = options.lossScaling ?? {};
  const resolved = { initScale: given.initScale ?? 2 ** 16, growthFactor: given.growthFactor ?? 2, backoffFactor: given.backoffFactor ?? 0.5, growthInterval: given.growthInterval ?? 2000 };
  const problems: string[] = [];
  if (!(resolved.initScale > 0 && Number.isFinite(resolved.initScale))) problems.push(`initial loss scale must be positive and finite, got ${resolved.initScale}`);
  if (!(resolved.growthFactor > 1 && Number.isFinite(resolved.growthFactor))) problems.push(`growth factor must be > 1, got ${resolved.growthFactor}`);
  if (!(resolved.backoffFactor > 0 && resolved.backoffFactor < 1)) problems.push(`backoff factor must lie in (0, 1), got ${resolved.backoffFactor}`);
  if (!Number.isInteger(resolved.growthInterval) || resolved.growthInterval < 1) problems.push(`growth interval must be a positive integer, got ${resolved.growthInterval}`);
  if (problems.length > 0) throw new AppError(Code.INVALID_ARGUMENT, `invalid loss scaling: ${problems.join("; ")}`);
  return resolved;
}

/** Maps an output name to the input name it feeds at the next step ("param_out:x" → "param:x"). */
function stateInputName(output: string): string | undefined {
  for (const [from, to] of [["param_out:", "param:"], ["buffer_out:", "buffer:"], ["slot_out:", "slot:"], ["accum_out:", "accum:"]] as const) {
    if (output.startsWith(from)) return to + output.slice(from.length);
  }
  return undefined;
}

function tensor(data: Float32Array, dims: readonly number[], what: string): ort.Tensor {
  const count = dims.reduce((a, b) => a * b, 1);
  if (data.length !== count) throw new AppError(Code.INVALID_ARGUMENT, `${what}: expected ${count} values for [${dims.join(", ")}], got ${data.length}`);
  return new ort.Tensor("float32", data, dims);
}

function scalar(value: number): ort.Tensor {
  return new ort.Tensor("float32", Float32Array.of(value), []);
}

/** The data-parallel parts of an engine: shard 0's gradients session, the helper replicas, zero accumulators. */
interface Replicated {
  readonly replicas: number;
  readonly gradients: ort.InferenceSession;
  readonly helpers: readonly WorkerClient[];
  readonly zeros: Readonly<Record<string, ort.Tensor>>;
}

function zeros(shape: readonly number[]): ort.Tensor {
  return new ort.Tensor("float32", new Float32Array(shape.reduce((a, b) => a * b, 1)), shape);
}
