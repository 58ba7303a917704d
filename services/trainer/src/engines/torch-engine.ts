import { AppError, Code, SeededRandom, type Env } from "@poseloop/core";
import {
  batchInputs,
  defineModel,
  emaProblems,
  initialize,
  IoNames,
  optimizerSlots,
  resolveOptimizer,
  type LossScalerState,
  type ModelConfig,
  type ModelDefinition,
  type EmaConfig,
  type StepBatch,
  type StepResult,
  type TrainingGraphConfig,
  type TrainingState,
} from "@poseloop/train";
import type { BatchBuilderConfig, BatchRequest } from "@poseloop/data";
import { engineDataRequest, type EngineDataOptions } from "./engine-data.js";
import { EngineProcess } from "./engine-process.js";
import { protocolError, type EngineMessage, type OutgoingTensor } from "./engine-protocol.js";
import { ENGINE_PROTOCOL_VERSION, engineEnv, PYTORCH_ENGINE_DIR } from "./python.js";
import type { EngineWeights, TrainingEngine } from "./training-engine.js";

export interface TorchEngineOptions {
  readonly model: ModelConfig;
  readonly training: TrainingGraphConfig;
  /** Seeds the weight initialization, done here exactly as the onnxruntime engine does it. */
  readonly seed: number;
  /** "cpu", "cuda" or "cuda:N". Default "cpu". */
  readonly device?: string;
  /** Mixed precision: fp16 with loss scaling on CUDA, bf16 on the CPU. Default false. */
  readonly amp?: boolean;
  /** Data-parallel replicas, each taking training.batchSize samples of a batch. Default 1. */
  readonly replicas?: number;
  /** GPUs per node; above 1 the engine runs under torchrun, one process per GPU. Default 1. */
  readonly gpus?: number;
  /** Nodes of a multi-node job (torchrun, static rendezvous at node 0). Default 1. */
  readonly nodes?: number;
  /** This node's rank, 0 ≤ nodeRank < nodes. Default 0. */
  readonly nodeRank?: number;
  /** host:port of the rendezvous, required with nodes > 1. */
  readonly rdzvEndpoint?: string;
  /** torchrun's rendezvous id (the job id), so two jobs never join each other's group. Default "poseloop". */
  readonly rdzvId?: string;
  /** torch intra-op threads; 0: torch's default. Default 0. */
  readonly threads?: number;
  readonly channelsLast?: boolean;
  readonly syncBatchNorm?: boolean;
  /** TRAIN.EMA: the engine keeps the moving average of the weights (libs/train's EmaConfig, the same formula). */
  readonly ema?: EmaConfig;
  /** Deterministic algorithms (cuDNN and friends), at some speed. Default false. */
  readonly deterministic?: boolean;
  /** The Python interpreter with torch. */
  readonly python: string;
  /** The torchrun launcher for gpus or nodes > 1; default `<python> -m poseloop_torch.torchrun` (torchrun, fixed for torch 1.13 on Python 3.11). */
  readonly torchrun?: string;
  /** The folder holding the poseloop_torch package. Default services/trainer/pytorch (PYTORCH_ENGINE_DIR). */
  readonly enginePath?: string;
  /** A request unanswered this long means the engine hung: it is killed. Default 10 minutes. */
  readonly progressTimeoutMs?: number;
  /** The same for the hello and `init`. Default: the larger of progressTimeoutMs and 2 minutes. */
  readonly startTimeoutMs?: number;
  /** How long release() waits for the engine to exit after `shutdown` before killing it. Default 5 s. */
  readonly shutdownGraceMs?: number;
  /** The engine's environment (the trainer's own, usually); PYTHONPATH gets enginePath in front. */
  readonly env: Env;
  /** Each stderr line of the engine, for the job's log. */
  readonly onStderr?: (line: string) => void;
}

type ResolvedTorchEngineOptions = Required<Omit<TorchEngineOptions, "torchrun" | "rdzvEndpoint" | "onStderr" | "startTimeoutMs" | "ema">> & Pick<TorchEngineOptions, "torchrun" | "rdzvEndpoint" | "onStderr" | "startTimeoutMs" | "ema">;

/** What the engine said about itself at start. */
export interface TorchEngineInfo {
  readonly torch: string;
  readonly python: string;
  /** The device it trains on, as torch names it ("cpu", "cuda:0"). */
  readonly device: string;
  readonly amp: "fp16" | "bf16" | null;
  readonly worldSize: number;
}

const DEVICE = /^(cpu|cuda(:\d+)?)$/;
const ENDPOINT = /^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/;

/** The options with their defaults; INVALID_ARGUMENT naming every problem. */
export function resolveTorchEngineOptions(options: TorchEngineOptions): ResolvedTorchEngineOptions {
  const resolved: ResolvedTorchEngineOptions = {
    ...options,
    device: options.device ?? "cpu",
    amp: options.amp ?? false,
    replicas: options.replicas ?? 1,
    gpus: options.gpus ?? 1,
    nodes: options.nodes ?? 1,
    nodeRank: options.nodeRank ?? 0,
    rdzvId: options.rdzvId ?? "poseloop",
    threads: options.threads ?? 0,
    channelsLast: options.channelsLast ?? false,
    syncBatchNorm: options.syncBatchNorm ?? false,
    deterministic: options.deterministic ?? false,
    enginePath: options.enginePath ?? PYTORCH_ENGINE_DIR,
    progressTimeoutMs: options.progressTimeoutMs ?? 600_000,
    shutdownGraceMs: options.shutdownGraceMs ?? 5_000,
  };
  const problems: string[] = [];
  const integer = (value: number, min: number, what: string): void => {
    if (!Number.isInteger(value) || value < min) problems.push(`${what} must be an integer ≥ ${min}, got ${value}`);
  };
  if (!DEVICE.test(resolved.device)) problems.push(`device must be cpu, cuda or cuda:N, got ${JSON.stringify(resolved.device)}`);
  integer(resolved.replicas, 1, "replicas");
  integer(resolved.gpus, 1, "gpus");
  integer(resolved.nodes, 1, "nodes");
  integer(resolved.threads, 0, "threads");
  if (!Number.isInteger(resolved.nodeRank) || resolved.nodeRank < 0 || resolved.nodeRank >= resolved.nodes) problems.push(`node rank must lie in 0..${resolved.nodes - 1}, got ${resolved.nodeRank}`);
  if (resolved.nodes > 1 && (resolved.rdzvEndpoint === undefined || !ENDPOINT.test(resolved.rdzvEndpoint))) {
    problems.push(`a multi-node job needs its rendezvous endpoint as host:port, got ${JSON.stringify(resolved.rdzvEndpoint ?? "")}`);
  }
  if (!(resolved.progressTimeoutMs > 0)) problems.push(`progress timeout must be positive, got ${resolved.progressTimeoutMs}`);
  if (!(resolved.shutdownGraceMs >= 0)) problems.push(`shutdown grace must not be negative, got ${resolved.shutdownGraceMs}`);
  if (resolved.python === "") problems.push("the python interpreter is not set");
  if (resolved.ema !== undefined) problems.push(...emaProblems(resolved.ema));
  if (problems.length > 0) throw AppError.invalid("pytorch engine options", problems);
  return resolved;
}

/**
 * How the engine is launched: `python -m poseloop_torch` for one process, torchrun (one process per GPU,
 * `--standalone` on one node, the static rendezvous at node 0 across nodes) otherwise.
 */
export function engineCommand(options: ResolvedTorchEngineOptions): { command: string; args: string[] } {
  if (options.gpus === 1 && options.nodes === 1) return { command: options.python, args: ["-m", "poseloop_torch"] };
  return torchrunCommand(options);
}

/** What torchrun needs to start one node's processes of a job. */
export interface NodeLaunch {
  readonly python: string;
  /** Default `<python> -m poseloop_torch.torchrun`. */
  readonly torchrun?: string;
  readonly gpus: number;
  readonly nodes: number;
  readonly nodeRank: number;
  /** host:port of node 0, where the nodes meet (nodes > 1). */
  readonly rdzvEndpoint?: string;
  readonly rdzvId: string;
}

/**
 * torchrun for one node of a job: `--standalone` on one node; across nodes the static rendezvous at node 0's
 * endpoint, where --node_rank decides which node is which. (c10d's dynamic rendezvous ranks nodes in the order
 * they join, so the node the trainer feeds — whose rank 0 speaks the protocol — could end up anywhere.) The
 * trainer runs node 0; the other nodes' trainers run the same command with their rank, and their processes take
 * each request from rank 0 over the process group.
 */
export function torchrunCommand(launch: NodeLaunch): { command: string; args: string[] } {
  // poseloop_torch.torchrun is torchrun itself, patched where torch 1.13's crashes on Python 3.11 before
  // starting a worker (its --redirects/--tee defaults; see the module).
  const launcher = launch.torchrun === undefined ? { command: launch.python, args: ["-m", "poseloop_torch.torchrun"] } : { command: launch.torchrun, args: [] };
  let topology = ["--standalone"];
  if (launch.nodes > 1) {
    const endpoint = launch.rdzvEndpoint ?? "";
    const colon = endpoint.lastIndexOf(":");
    const host = endpoint.slice(0, colon).replace(/^\[(.*)\]$/, "$1");
    topology = ["--nnodes", String(launch.nodes), "--node_rank", String(launch.nodeRank), "--master_addr", host, "--master_port", endpoint.slice(colon + 1)];
  }
  // A failed worker fails the job: torchrun restarting it would replay requests the trainer already sent.
  return { command: launcher.command, args: [...launcher.args, ...topology, "--nproc_per_node", String(launch.gpus), "--max_restarts", "0", "-m", "poseloop_torch"] };
}

const count = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/**
 * The training state a fresh onnxruntime engine starts from for this seed (StepEngine's #initialize): the
 * parameters then the buffers from one SeededRandom stream in registry order, zero optimizer slots, and zero
 * accumulators under gradient accumulation. Tensor names are the TrainingState's.
 */
export function initialTrainingState(model: ModelDefinition, training: TrainingGraphConfig, seed: number): { state: TrainingState; shapes: Map<string, readonly number[]> } {
  const random = SeededRandom.fromSeed32(seed);
  const tensors = new Map<string, Float32Array>();
  const shapes = new Map<string, readonly number[]>();
  const put = (name: string, shape: readonly number[], data: Float32Array): void => {
    tensors.set(name, data);
    shapes.set(name, shape);
  };
  for (const spec of model.registry.params) put(IoNames.param(spec.name), spec.shape, initialize(spec, random));
  for (const spec of model.registry.buffers) put(IoNames.buffer(spec.name), spec.shape, initialize(spec, random));
  for (const spec of model.registry.params) {
    for (const slot of optimizerSlots(resolveOptimizer(training.optimizer))) put(IoNames.slot(slot, spec.name), spec.shape, new Float32Array(count(spec.shape)));
  }
  if ((training.gradAccumSteps ?? 1) > 1) {
    for (const spec of model.registry.params) put(IoNames.accum(spec.name), spec.shape, new Float32Array(count(spec.shape)));
  }
  return { state: { step: 0, microStep: 0, tensors }, shapes };
}

/**
 * The PyTorch engine: a `python -m poseloop_torch` process per job (torchrun's workers for several GPUs)
 * that takes the steps, spoken to over services/trainer/pytorch/PROTOCOL.md. It starts from the weights the
 * onnxruntime engine would start from for the same seed, and keeps its state in the same names, so a
 * checkpoint continues under either engine. Every failure of the process becomes an AppError of the
 * request in flight; release() must be called.
 */
export class TorchTrainingEngine implements TrainingEngine {
  readonly kind = "pytorch";
  readonly model: ModelDefinition;
  readonly info: TorchEngineInfo;
  readonly #options: ResolvedTorchEngineOptions;
  readonly #process: EngineProcess;
  /** Every state tensor's name and shape, in the state's order. */
  readonly #shapes: ReadonlyMap<string, readonly number[]>;
  #step = 0;
  #dataAttached = false;

  private constructor(options: ResolvedTorchEngineOptions, model: ModelDefinition, process: EngineProcess, shapes: ReadonlyMap<string, readonly number[]>, info: TorchEngineInfo) {
    this.#options = options;
    this.model = model;
    this.#process = process;
    this.#shapes = shapes;
    this.info = info;
  }

  get description(): string {
    const { torch, device, amp, worldSize } = this.info;
    return [`pytorch ${torch} on ${device}`, ...(amp === null ? [] : [`${amp} autocast`]), ...(worldSize > 1 ? [`${worldSize} processes (DDP)`] : [])].join(", ");
  }

  static async create(options: TorchEngineOptions): Promise<TorchTrainingEngine> {
    const resolved = resolveTorchEngineOptions(options);
    const model = defineModel(resolved.model);
    const { state, shapes } = initialTrainingState(model, resolved.training, resolved.seed);
    const { command, args } = engineCommand(resolved);
    const process = EngineProcess.start({
      command,
      args,
      // Unbuffered, so a traceback's last line is on stderr before the process is gone.
      env: { ...engineEnv(resolved.env, resolved.enginePath), PYTHONUNBUFFERED: "1" },
      progressTimeoutMs: resolved.progressTimeoutMs,
      ...(options.startTimeoutMs === undefined ? {} : { startTimeoutMs: options.startTimeoutMs }),
      ...(resolved.onStderr === undefined ? {} : { onStderr: resolved.onStderr }),
    });
    try {
      const hello = (await process.hello).message;
      if (typeof hello.error === "string") throw new AppError(Code.FAILED_PRECONDITION, `the pytorch engine cannot run with ${resolved.python}: ${hello.error}`);
      if (hello.protocol !== ENGINE_PROTOCOL_VERSION) throw new AppError(Code.FAILED_PRECONDITION, `the pytorch engine speaks protocol ${String(hello.protocol)}, this trainer ${ENGINE_PROTOCOL_VERSION}`);
      const ready = (await process.request("init", "ready", initRequest(resolved))).message;
      checkLayout(ready, model);
      // An engine from before TRAIN.EMA would train without it and say nothing.
      if (resolved.ema !== undefined && ready.ema !== true) throw new AppError(Code.FAILED_PRECONDITION, `the pytorch engine at ${resolved.enginePath} does not keep a moving average of the weights (TRAIN.EMA)`);
      if (resolved.ema !== undefined) {
        for (const spec of model.registry.params) shapes.set(IoNames.emaParam(spec.name), spec.shape);
        for (const spec of model.registry.buffers) shapes.set(IoNames.emaBuffer(spec.name), spec.shape);
      }
      const engine = new TorchTrainingEngine(resolved, model, process, shapes, {
        torch: String(hello.torch),
        python: String(hello.python),
        device: String(ready.device),
        amp: ready.amp === "fp16" || ready.amp === "bf16" ? ready.amp : null,
        worldSize: typeof ready.worldSize === "number" ? ready.worldSize : 1,
      });
      await engine.importState(state);
      return engine;
    } catch (error) {
      await process.close(0);
      throw error;
    }
  }

  get step(): number {
    return this.#step;
  }

  /** The engine's last stderr lines (for the job's log when something failed). */
  get stderrTail(): readonly string[] {
    return this.#process.stderrTail;
  }

  async run(batch: StepBatch, lr: number): Promise<StepResult> {
    const { batchSize, distillation } = this.#options.training;
    const b = batchSize * this.#options.replicas;
    const { inputWidth: w, inputHeight: h, numKeypoints: k } = this.model.config;
    const heatmaps = [b, k, this.model.heatmapHeight, this.model.heatmapWidth];
    // A model with a loss of its own (the detector) sends its loss inputs, named as in libs/train's graphs.
    const tensors: OutgoingTensor[] =
      this.model.objective !== undefined
        ? batchInputs(this.model, this.#options.training).map((input) => ({ name: input.name, shape: [b, ...input.shape], data: input.data(batch) }))
        : [
            { name: "images", shape: [b, 3, h, w], data: batch.images },
            { name: "targets", shape: heatmaps, data: batch.targets },
            { name: "target_weights", shape: [b, k], data: batch.targetWeights },
          ];
    if (distillation !== undefined) {
      if (batch.teacher === undefined) throw new AppError(Code.INVALID_ARGUMENT, "distillation needs teacher heatmaps in every batch");
      tensors.push({ name: "teacher", shape: heatmaps, data: batch.teacher });
    }
    return this.#stepResult((await this.#process.request("step", "step_result", { lr }, tensors)).message);
  }

  /**
   * Hands the engine the job's training samples and how to build batches of them (TRAIN.DATA_LOADER engine):
   * from now on its own torch.utils.data workers build the batches `plan` names, each process only the replica
   * blocks it trains. Image paths under the trainer's data root and work dir are sent relative to them, and
   * every node's engine resolves them against its own (POSELOOP_DATA_ROOT, POSELOOP_WORK_DIR).
   */
  async attachData(config: BatchBuilderConfig, options: EngineDataOptions): Promise<void> {
    await this.#process.request("data", "data_ready", engineDataRequest(config, options));
    this.#dataAttached = true;
  }

  /** The batches the next `runPlanned` calls take, in order (an epoch from a batch on); replaces any earlier plan. */
  async plan(requests: readonly BatchRequest[]): Promise<void> {
    if (!this.#dataAttached) throw new AppError(Code.FAILED_PRECONDITION, "plan before the engine was given its data (attachData)");
    const epoch = requests[0]?.epoch ?? 0;
    await this.#process.request("plan", "ok", { epoch, batches: requests.map((request) => [request.index, Array.from(request.samples)]) });
  }

  /** One micro-batch the engine builds itself: the next planned one, which must be batch `index` of `epoch`. */
  async runPlanned(batch: { epoch: number; index: number }, lr: number): Promise<StepResult> {
    return this.#stepResult((await this.#process.request("step", "step_result", { lr, batch: { epoch: batch.epoch, index: batch.index } })).message);
  }

  #stepResult(answer: EngineMessage): StepResult {
    const { loss, updated, gradNorm, step, skipped, lossScale } = answer;
    if (typeof loss !== "number" || typeof updated !== "boolean" || typeof step !== "number" || !Number.isInteger(step)) throw this.#broken(`an invalid step_result: ${JSON.stringify(answer)}`);
    this.#step = step;
    return {
      loss,
      updated,
      gradNorm: updated && typeof gradNorm === "number" ? gradNorm : undefined,
      step,
      ...(typeof skipped === "boolean" ? { skipped } : {}),
      ...(typeof lossScale === "number" ? { lossScale } : {}),
    };
  }

  async weights(): Promise<EngineWeights> {
    const { tensors } = await this.#process.request("get_weights", "weights");
    const pick = (names: readonly string[]): Map<string, Float32Array> => {
      const picked = new Map<string, Float32Array>();
      for (const name of names) picked.set(name.slice(name.indexOf(":") + 1), this.#tensor(tensors, name, "weights"));
      return picked;
    };
    return {
      params: pick(this.model.registry.params.map((spec) => IoNames.param(spec.name))),
      buffers: pick(this.model.registry.buffers.map((spec) => IoNames.buffer(spec.name))),
    };
  }

  async averagedWeights(): Promise<EngineWeights | undefined> {
    if (this.#options.ema === undefined) return undefined;
    const { tensors } = await this.#process.request("get_weights", "weights", { averaged: true });
    const pick = (names: readonly [string, string][]): Map<string, Float32Array> => new Map(names.map(([name, key]) => [name, this.#tensor(tensors, key, "averaged weights")]));
    return {
      params: pick(this.model.registry.params.map((spec) => [spec.name, IoNames.emaParam(spec.name)])),
      buffers: pick(this.model.registry.buffers.map((spec) => [spec.name, IoNames.emaBuffer(spec.name)])),
    };
  }

  async exportState(): Promise<TrainingState> {
    const { message, tensors } = await this.#process.request("get_state", "state", {}, [], true);
    const state = new Map<string, Float32Array>();
    for (const name of this.#shapes.keys()) state.set(name, this.#tensor(tensors, name, "state"));
    const { step, microStep, lossScaler } = message;
    if (typeof step !== "number" || typeof microStep !== "number") throw this.#broken("a state without its step counters");
    return { step, microStep, tensors: state, ...(isLossScaler(lossScaler) ? { lossScaler } : {}) };
  }

  async importState(state: TrainingState): Promise<void> {
    const k = this.#options.training.gradAccumSteps ?? 1;
    const tensors: OutgoingTensor[] = [];
    // A state saved without a moving average (a fresh start, loaded weights, a run without TRAIN.EMA) starts
    // one at its weights, in the engine; part of one is refused.
    const averaged = [...this.#shapes.keys()].filter((name) => name.startsWith("ema:"));
    const given = averaged.filter((name) => state.tensors.has(name)).length;
    if (given > 0 && given < averaged.length) throw new AppError(Code.INVALID_ARGUMENT, `the state has ${given} of the ${averaged.length} moving-average tensors (ema:...)`);
    for (const [name, shape] of this.#shapes) {
      if (given === 0 && name.startsWith("ema:")) continue;
      const data = state.tensors.get(name);
      if (data === undefined) throw new AppError(Code.INVALID_ARGUMENT, `the state has no tensor ${name}`);
      if (data.length !== count(shape)) throw new AppError(Code.INVALID_ARGUMENT, `tensor ${name} has ${data.length} values, the model needs ${count(shape)}`);
      tensors.push({ name, shape, data });
    }
    if (!Number.isInteger(state.microStep) || state.microStep < 0 || state.microStep >= k) {
      throw new AppError(Code.INVALID_ARGUMENT, `micro-step ${state.microStep} is outside 0..${k - 1}`);
    }
    const fields = { step: state.step, microStep: state.microStep, ...(state.lossScaler === undefined ? {} : { lossScaler: state.lossScaler }) };
    await this.#process.request("set_state", "ok", fields, tensors);
    this.#step = state.step;
  }

  async loadWeights(weights: ReadonlyMap<string, Float32Array>, options: { skip?: readonly string[] } = {}): Promise<void> {
    const chosen: [string, Float32Array][] = [];
    for (const [name, data] of weights) {
      if (options.skip?.some((prefix) => name.startsWith(prefix)) === true) continue;
      const key = this.#shapes.has(IoNames.param(name)) ? IoNames.param(name) : IoNames.buffer(name);
      const shape = this.#shapes.get(key);
      if (shape === undefined) throw new AppError(Code.INVALID_ARGUMENT, `the model has no parameter or buffer ${name}`);
      if (data.length !== count(shape)) throw new AppError(Code.INVALID_ARGUMENT, `${name} has ${data.length} values, the model needs ${count(shape)}`);
      chosen.push([key, data]);
    }
    // The engine's state is replaced whole, so the rest of it (slots, counters) goes back as it was.
    const current = await this.exportState();
    // Without its moving average: the engine starts a new one at the loaded weights.
    const tensors = new Map([...current.tensors].filter(([key]) => !key.startsWith("ema:")));
    for (const [key, data] of chosen) tensors.set(key, data);
    await this.importState({ ...current, tensors });
  }

  /** Shuts the engine down (killing it if it does not exit in time). Idempotent. */
  release(): Promise<void> {
    return this.#process.close(this.#options.shutdownGraceMs);
  }

  #tensor(tensors: ReadonlyMap<string, Float32Array>, name: string, what: string): Float32Array {
    const data = tensors.get(name);
    const shape = this.#shapes.get(name);
    if (data === undefined) throw this.#broken(`${what} without ${name}`);
    if (shape !== undefined && data.length !== count(shape)) throw this.#broken(`${what} with ${data.length} values for ${name}, the model has ${count(shape)}`);
    return data;
  }

  /** A protocol error found in an answer's content: the engine cannot be trusted any more. */
  #broken(why: string): AppError {
    void this.release();
    return protocolError(why);
  }
}

function initRequest(options: ResolvedTorchEngineOptions): Record<string, unknown> {
  const { training } = options;
  return {
    model: options.model,
    training: {
      batchSize: training.batchSize,
      gradAccumSteps: training.gradAccumSteps ?? 1,
      clipGradNorm: training.clipGradNorm ?? 0,
      // Resolved, so both engines apply the same defaults (SGD's momentum 0.9, AdamW's decay 0.01).
      optimizer: resolveOptimizer(training.optimizer),
      ...(training.distillation === undefined ? {} : { distillation: { temperature: 1, ...training.distillation } }),
      ...(options.ema === undefined ? {} : { ema: { decay: options.ema.decay, warmupUpdates: options.ema.warmupUpdates } }),
    },
    device: options.device,
    amp: options.amp,
    replicas: options.replicas,
    threads: options.threads,
    channelsLast: options.channelsLast,
    syncBatchNorm: options.syncBatchNorm,
    deterministic: options.deterministic,
  };
}

/** The engine's model must be the zoo's, name for name and shape for shape, or nothing it returns means anything. */
function checkLayout(ready: EngineMessage, model: ModelDefinition): void {
  const describe = (list: unknown): string[] => (Array.isArray(list) ? list.map((entry) => JSON.stringify(entry)) : []);
  for (const [what, specs, listed] of [
    ["parameters", model.registry.params, ready.params],
    ["buffers", model.registry.buffers, ready.buffers],
  ] as const) {
    const expected = specs.map((spec) => JSON.stringify([spec.name, spec.shape]));
    const got = describe(listed);
    const missing = expected.filter((entry) => !got.includes(entry));
    const extra = got.filter((entry) => !expected.includes(entry));
    if (missing.length > 0 || extra.length > 0) {
      const sample = [...missing.slice(0, 3).map((e) => `missing ${e}`), ...extra.slice(0, 3).map((e) => `unexpected ${e}`)].join(", ");
      throw new AppError(Code.INTERNAL, `the pytorch engine's model has other ${what} than the zoo's (${missing.length} missing, ${extra.length} unexpected: ${sample})`);
    }
  }
}

function isLossScaler(value: unknown): value is LossScalerState {
  if (typeof value !== "object" || value === null) return false;
  const scaler = value as Record<string, unknown>;
  return typeof scaler.scale === "number" && typeof scaler.goodSteps === "number" && typeof scaler.skippedSteps === "number";
}
