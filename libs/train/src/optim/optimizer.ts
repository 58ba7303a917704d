import type { GraphBuilder, Value } from "@poseloop/onnx";

export type OptimizerKind = "sgd" | "adam" | "adamw";

export interface OptimizerConfig {
  readonly kind: OptimizerKind;
  /** SGD momentum (0: plain SGD). Default 0.9. */
  readonly momentum?: number;
  readonly nesterov?: boolean;
  /** L2 penalty added to the gradient (SGD, Adam) or decoupled decay (AdamW). Default 0 (AdamW 0.01). */
  readonly weightDecay?: number;
  readonly beta1?: number;
  readonly beta2?: number;
  readonly epsilon?: number;
}

/** Resolved hyper-parameters, as the graph bakes them in. */
export interface ResolvedOptimizer {
  readonly kind: OptimizerKind;
  readonly momentum: number;
  readonly nesterov: boolean;
  readonly weightDecay: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly epsilon: number;
}

export function resolveOptimizer(config: OptimizerConfig): ResolvedOptimizer {
  return {
    kind: config.kind,
    momentum: config.momentum ?? (config.kind === "sgd" ? 0.9 : 0),
    nesterov: config.nesterov ?? false,
    weightDecay: config.weightDecay ?? (config.kind === "adamw" ? 0.01 : 0),
    beta1: config.beta1 ?? 0.9,
    beta2: config.beta2 ?? 0.999,
    epsilon: config.epsilon ?? 1e-8,
  };
}

/** Per-parameter state tensors ("slots") an optimizer keeps, by name. */
export function optimizerSlots(optimizer: ResolvedOptimizer): readonly string[] {
  if (optimizer.kind === "sgd") return optimizer.momentum > 0 ? ["momentum_buffer"] : [];
  return ["exp_avg", "exp_avg_sq"];
}

/** Scalar inputs the update needs each step, computed in TypeScript (in float64) by stepScalars(). */
export interface StepScalars {
  readonly lr: number;
  /** Adam: lr / (1 − β1^t). */
  readonly adamStepSize: number;
  /** Adam: √(1 − β2^t). */
  readonly adamSqrtBc2: number;
}

/** The scalars of optimizer step `t` (1-based) at learning rate `lr`. */
export function stepScalars(optimizer: ResolvedOptimizer, lr: number, t: number): StepScalars {
  return {
    lr,
    adamStepSize: lr / (1 - optimizer.beta1 ** t),
    adamSqrtBc2: Math.sqrt(1 - optimizer.beta2 ** t),
  };
}

export interface UpdateInputs {
  readonly lr: Value;
  readonly adamStepSize: Value;
  readonly adamSqrtBc2: Value;
}

/**
 * Emits one parameter's update with PyTorch's semantics (torch.optim.SGD, Adam, AdamW, single-tensor path):
 *   SGD:   g ← g + λp;  b ← μb + g;  g ← g + μb (Nesterov) or b;  p ← p − lr·g
 *   Adam:  g ← g + λp;  m ← β1m + (1−β1)g;  v ← β2v + (1−β2)g²;  p ← p − lr/(1−β1ᵗ) · m/(√v/√(1−β2ᵗ) + ε)
 *   AdamW: p ← p·(1 − lr·λ), then Adam without the λp term.
 * Returns the new parameter and the new slots in optimizerSlots() order.
 */
export function emitUpdate(
  g: GraphBuilder,
  optimizer: ResolvedOptimizer,
  param: Value,
  grad: Value,
  slots: readonly Value[],
  scalars: UpdateInputs,
): { param: Value; slots: Value[] } {
  const shape = param.shape;
  const out = shape === undefined ? {} : { shape };
  let d = grad;
  if (optimizer.weightDecay > 0 && optimizer.kind !== "adamw") d = g.op("Add", [d, g.op("Mul", [param, g.scalar(optimizer.weightDecay)])], {}, out);
  if (optimizer.kind === "sgd") {
    const newSlots: Value[] = [];
    if (optimizer.momentum > 0) {
      const buffer = g.op("Add", [g.op("Mul", [slots[0], g.scalar(optimizer.momentum)]), d], {}, out);
      newSlots.push(buffer);
      d = optimizer.nesterov ? g.op("Add", [d, g.op("Mul", [buffer, g.scalar(optimizer.momentum)])], {}, out) : buffer;
    }
    return { param: g.op("Sub", [param, g.op("Mul", [d, scalars.lr])], {}, out), slots: newSlots };
  }
  let p = param;
  if (optimizer.kind === "adamw" && optimizer.weightDecay > 0) {
    p = g.op("Mul", [p, g.op("Sub", [g.scalar(1), g.op("Mul", [scalars.lr, g.scalar(optimizer.weightDecay)])])], {}, out);
  }
  const m = g.op("Add", [g.op("Mul", [slots[0], g.scalar(optimizer.beta1)]), g.op("Mul", [d, g.scalar(1 - optimizer.beta1)])], {}, out);
  const v = g.op("Add", [g.op("Mul", [slots[1], g.scalar(optimizer.beta2)]), g.op("Mul", [g.op("Mul", [d, d]), g.scalar(1 - optimizer.beta2)])], {}, out);
  const denom = g.op("Add", [g.op("Div", [g.op("Sqrt", [v]), scalars.adamSqrtBc2]), g.scalar(optimizer.epsilon)], {}, out);
  const newParam = g.op("Sub", [p, g.op("Mul", [g.op("Div", [m, denom]), scalars.adamStepSize])], {}, out);
  return { param: newParam, slots: [m, v] };
}
