import { GraphBuilder, type ModelProto, type Value } from "@poseloop/onnx";
import { AppError, Code } from "@poseloop/core";
import { ForwardContext } from "../nn/context.js";
import { add, scale } from "../ops/basic.js";
import { distillKlLoss, distillMseLoss, jointsMseLoss } from "../ops/loss.js";
import { reshape } from "../ops/basic.js";
import { emitUpdate, optimizerSlots, resolveOptimizer, type OptimizerConfig, type ResolvedOptimizer } from "../optim/optimizer.js";
import { Tape, type Sym } from "../tape.js";
import type { ModelDefinition } from "../zoo/model-config.js";
import { IoNames } from "./io-names.js";

export interface DistillationConfig {
  /** Weight of the teacher term against the ground-truth loss. */
  readonly weight: number;
  readonly kind: "mse" | "kl";
  /** KL temperature. Default 1. */
  readonly temperature?: number;
}

export interface TrainingGraphConfig {
  readonly batchSize: number;
  /** Micro-batches per optimizer update. Default 1. */
  readonly gradAccumSteps?: number;
  /** Clip gradients to this global L2 norm; 0 or absent: no clipping. */
  readonly clipGradNorm?: number;
  readonly optimizer: OptimizerConfig;
  readonly distillation?: DistillationConfig;
  /** Also output each parameter's gradient of the update, before clipping ("grad:<name>"), for verification. */
  readonly exposeGradients?: boolean;
  /**
   * Mixed precision: convolutions and matrix products (forward and backward) in fp16, the rest in fp32, fp32
   * master weights, and dynamic loss scaling — the graphs take the scale as an input, seed the backward pass
   * with it, unscale the gradients in fp32, and leave weights and optimizer state unchanged when any gradient
   * is not finite ("grads_finite" says which; the StepEngine adjusts the scale).
   */
  readonly mixedPrecision?: boolean;
  /**
   * Compiles for onnxruntime's CPU provider: eligible convolutions run through its blocked-layout (NCHWc)
   * kernels with this channel block (`nchwcBlockSize()`), which makes the graphs CPU-only. The StepEngine
   * sets it on the CPU provider; absent: standard ONNX ops only.
   */
  readonly nchwcBlock?: number;
}

export interface TrainingGraphs {
  /** Forward, backward, clipping and the optimizer update of the last micro-batch of an update. */
  readonly step: ModelProto;
  /** Forward and backward adding into the gradient accumulators (only when gradAccumSteps > 1). */
  readonly accumulate: ModelProto | undefined;
  readonly optimizer: ResolvedOptimizer;
  readonly slots: readonly string[];
}

/**
 * Compiles a model into its training graphs: one ONNX graph per step with the batch, the targets, the
 * learning rate, the parameters, the optimizer state and the BatchNorm statistics as inputs, and the loss, the
 * gradient norm and all the new state as outputs. With gradient accumulation the loss is scaled by 1/k so that
 * k accumulated micro-batches give the gradient of their union, as with `loss / k` in PyTorch.
 */
export function compileTrainingGraphs(model: ModelDefinition, config: TrainingGraphConfig): TrainingGraphs {
  const k = config.gradAccumSteps ?? 1;
  if (!Number.isInteger(k) || k < 1) throw new AppError(Code.INVALID_ARGUMENT, `gradient accumulation steps must be a positive integer, got ${k}`);
  const optimizer = resolveOptimizer(config.optimizer);
  return {
    step: emit(model, config, optimizer, k, true),
    accumulate: k > 1 ? emit(model, config, optimizer, k, false) : undefined,
    optimizer,
    slots: optimizerSlots(optimizer),
  };
}

function emit(model: ModelDefinition, config: TrainingGraphConfig, optimizer: ResolvedOptimizer, k: number, update: boolean): ModelProto {
  const g = new GraphBuilder({ name: update ? "train_step" : "train_accumulate", producer: "poseloop-train" });
  const t = new Tape(g, config.nchwcBlock === undefined ? {} : { nchwcBlock: config.nchwcBlock });
  const { batchSize: b, distillation } = config;
  const { inputWidth: w, inputHeight: h, numKeypoints: kp } = model.config;
  const hw = model.heatmapWidth;
  const hh = model.heatmapHeight;
  const objective = model.objective;
  if (objective !== undefined && distillation !== undefined) throw new AppError(Code.INVALID_ARGUMENT, "distillation applies to heatmap models, not to the detector");
  const images = t.sym(g.input(IoNames.images, "float32", [b, 3, h, w]), [b, 3, h, w]);
  // A heatmap model's targets, or the inputs of a model's own loss (the detector's).
  const targets = objective === undefined ? g.input(IoNames.targets, "float32", [b, kp, hh, hw]) : undefined;
  const targetWeights = objective === undefined ? g.input(IoNames.targetWeights, "float32", [b, kp]) : undefined;
  const lossInputs = new Map((objective?.lossInputs ?? []).map((input) => [input.name, g.input(input.name, "float32", [b, ...input.shape])]));
  const teacher = distillation === undefined ? undefined : g.input(IoNames.teacher, "float32", [b, kp, hh, hw]);
  const scalars = update
    ? { lr: g.input(IoNames.lr, "float32", []), adamStepSize: g.input(IoNames.adamStepSize, "float32", []), adamSqrtBc2: g.input(IoNames.adamSqrtBc2, "float32", []) }
    : undefined;

  const params = new Map<string, Sym>();
  for (const spec of model.registry.params) params.set(spec.name, t.sym(g.input(IoNames.param(spec.name), "float32", spec.shape), spec.shape, true));
  const buffers = new Map<string, Value>();
  for (const spec of model.registry.buffers) buffers.set(spec.name, g.input(IoNames.buffer(spec.name), "float32", spec.shape));

  const mixed = config.mixedPrecision === true;
  const lossScale = mixed ? g.input(IoNames.lossScale, "float32", []) : undefined;
  const ctx = new ForwardContext(t, "train", params, buffers, { computeType: mixed ? "float16" : "float32" });
  let loss: Sym;
  if (objective !== undefined) {
    loss = objective.loss(ctx, images, lossInputs);
  } else {
    const heatmaps = model.forward(ctx, images);
    loss = jointsMseLoss(t, heatmaps, targets as Value, targetWeights as Value);
    if (distillation !== undefined && teacher !== undefined) {
      const term =
        distillation.kind === "mse"
          ? distillMseLoss(t, heatmaps, teacher)
          : distillKlLoss(t, reshape(t, heatmaps, [b, kp, hh * hw], [b, kp, hh * hw]), g.op("Reshape", [teacher, g.int64s([b, kp, hh * hw])]), distillation.temperature ?? 1);
      loss = add(t, loss, scale(t, term, distillation.weight));
    }
  }
  g.output(loss.value, IoNames.loss);
  // State outputs rename their producers' outputs (and the readers' inputs): no Identity copy per state tensor.
  for (const [name, value] of ctx.updatedBuffers) g.output(value, IoNames.bufferOut(name), { renameProducer: true });

  const wrt = [...params.values()];
  // Under loss scaling the backward pass starts from the scale (so small fp16 gradients do not flush to zero)
  // and every gradient is unscaled in fp32 as it leaves it, before accumulation, clipping and the update.
  const seed = lossScale === undefined ? g.scalar(1 / k) : k === 1 ? lossScale : g.op("Mul", [lossScale, g.scalar(1 / k)], {}, { shape: [] });
  const grads = t.gradients(loss, wrt, t.sym(seed, [], false));
  const unscale = lossScale === undefined ? undefined : g.op("Reciprocal", [lossScale], {}, { shape: [] });
  const names = [...params.keys()];
  const totalGrads = names.map((name) => {
    const spec = params.get(name) as Sym;
    const grad = grads.get(spec);
    if (grad === undefined) throw new AppError(Code.INTERNAL, `parameter ${name} gets no gradient`);
    const value = unscale === undefined ? grad.value : g.op("Mul", [grad.value, unscale], {}, { shape: spec.shape });
    if (k === 1) return value;
    return g.op("Add", [g.input(IoNames.accum(name), "float32", spec.shape), value], {}, { shape: spec.shape });
  });

  if (!update) {
    names.forEach((name, i) => g.output(totalGrads[i] as Value, IoNames.accumOut(name)));
    return g.build();
  }

  const updated = [...params].map(([name, sym]) => ({ name, value: sym.value, shape: sym.shape as readonly number[] }));
  emitUpdateTail(g, config, optimizer, updated, totalGrads, scalars as NonNullable<typeof scalars>, mixed);
  return g.build();
}

/**
 * The update part of a step — global gradient norm, clipping, the overflow check under mixed precision, the
 * optimizer — for `params` with their total gradients `grads` (same order). Shared by the step graph and the
 * data-parallel apply graph.
 */
function emitUpdateTail(
  g: GraphBuilder,
  config: TrainingGraphConfig,
  optimizer: ResolvedOptimizer,
  params: readonly { name: string; value: Value; shape: readonly number[] }[],
  totalGrads: readonly Value[],
  scalars: { lr: Value; adamStepSize: Value; adamSqrtBc2: Value },
  mixed: boolean,
): void {
  // Global L2 norm of all gradients, before clipping (reported as grad_norm in any case).
  const squares = totalGrads.map((grad) => g.op("ReduceSumSquare", [grad], { keepdims: { i: 0 } }, { shape: [] }));
  const sumSquares = squares.reduce((acc, sq) => g.op("Add", [acc, sq], {}, { shape: [] }));
  const norm = g.op("Sqrt", [sumSquares], {}, { shape: [] });
  g.output(norm, IoNames.gradNorm);
  if (config.exposeGradients === true) params.forEach(({ name }, i) => g.output(totalGrads[i] as Value, IoNames.grad(name)));
  let clipped = totalGrads;
  const maxNorm = config.clipGradNorm ?? 0;
  if (maxNorm > 0) {
    // torch.nn.utils.clip_grad_norm_: coefficient max_norm / (norm + 1e-6), capped at 1.
    const coefficient = g.op("Min", [g.op("Div", [g.scalar(maxNorm), g.op("Add", [norm, g.scalar(1e-6)])]), g.scalar(1)], {}, { shape: [] });
    clipped = totalGrads.map((grad, i) => g.op("Mul", [grad, coefficient], {}, { shape: (params[i] as { shape: readonly number[] }).shape }));
  }
  // Mixed precision: an overflow anywhere makes the sum of squares inf or NaN; then the update is skipped —
  // weights and optimizer state pass through unchanged (torch.cuda.amp.GradScaler skips optimizer.step()).
  let finite: Value | undefined;
  if (mixed) {
    finite = g.op("Not", [g.op("Or", [g.op("IsInf", [sumSquares], {}, { shape: [] }), g.op("IsNaN", [sumSquares], {}, { shape: [] })], {}, { shape: [] })], {}, { shape: [] });
    g.output(finite, IoNames.gradsFinite);
  }
  const keepUnlessFinite = (updated: Value, old: Value, shape: readonly number[]) => (finite === undefined ? updated : g.op("Where", [finite, updated, old], {}, { shape }));
  const slots = optimizerSlots(optimizer);
  params.forEach(({ name, value, shape }, i) => {
    const slotInputs = slots.map((slot) => g.input(IoNames.slot(slot, name), "float32", shape));
    const updated = emitUpdate(g, optimizer, value, clipped[i] as Value, slotInputs, scalars);
    g.output(keepUnlessFinite(updated.param, value, shape), IoNames.paramOut(name), { renameProducer: true });
    slots.forEach((slot, j) => g.output(keepUnlessFinite(updated.slots[j] as Value, slotInputs[j] as Value, shape), IoNames.slotOut(slot, name), { renameProducer: true }));
  });
}

/** The graphs of data-parallel training over `replicas` shards of a batch. */
export interface ReplicaGraphs {
  /** Forward and backward of one shard: its loss, BatchNorm statistics and gradient / replicas ("accum_out:<name>"). */
  readonly gradients: ModelProto;
  /** Sums the shards' gradients (shard 0's first, in order) and applies clipping and the optimizer update. */
  readonly apply: ModelProto;
  readonly optimizer: ResolvedOptimizer;
  readonly slots: readonly string[];
}

/**
 * Compiles data-parallel training: every replica runs `gradients` on its shard (the accumulation graph of
 * `replicas` micro-batches, from zero accumulators), and `apply` sums the shards' gradients in shard order and
 * updates the weights. The update equals gradient accumulation over the same shards bit for bit — the sums are
 * the same additions in the same order — while the shards run at the same time.
 */
export function compileReplicaGraphs(model: ModelDefinition, config: TrainingGraphConfig, replicas: number): ReplicaGraphs {
  if (!Number.isInteger(replicas) || replicas < 2) throw new AppError(Code.INVALID_ARGUMENT, `data-parallel training needs at least 2 replicas, got ${replicas}`);
  if ((config.gradAccumSteps ?? 1) !== 1) throw new AppError(Code.INVALID_ARGUMENT, "data-parallel replicas and gradient accumulation cannot be combined: use one or the other");
  const optimizer = resolveOptimizer(config.optimizer);
  const gradients = compileShardGradients(model, config, replicas);
  const g = new GraphBuilder({ name: "train_apply", producer: "poseloop-train" });
  const scalars = { lr: g.input(IoNames.lr, "float32", []), adamStepSize: g.input(IoNames.adamStepSize, "float32", []), adamSqrtBc2: g.input(IoNames.adamSqrtBc2, "float32", []) };
  const params = model.registry.params.map((spec) => ({ name: spec.name, value: g.input(IoNames.param(spec.name), "float32", spec.shape), shape: spec.shape }));
  const totals = params.map(({ name, shape }) => {
    let total = g.input(IoNames.shardGrad(0, name), "float32", shape);
    for (let r = 1; r < replicas; r++) total = g.op("Add", [total, g.input(IoNames.shardGrad(r, name), "float32", shape)], {}, { shape });
    return total;
  });
  emitUpdateTail(g, config, optimizer, params, totals, scalars, config.mixedPrecision === true);
  return { gradients, apply: g.build(), optimizer, slots: optimizerSlots(optimizer) };
}

/** The gradients graph of one data-parallel shard (what a helper replica runs). */
export function compileShardGradients(model: ModelDefinition, config: TrainingGraphConfig, replicas: number): ModelProto {
  return emit(model, config, resolveOptimizer(config.optimizer), replicas, false);
}
