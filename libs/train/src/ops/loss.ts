import type { Value } from "@poseloop/onnx";
import { type Tape, type Sym } from "../tape.js";
import { nums } from "./dims.js";
import { reduce } from "./reduce.js";

const SCALAR: readonly number[] = [];

/**
 * The heatmap loss of the HRNet reference (JointsMSELoss with target weights):
 *   L = 1/K · Σ_k 0.5 · mean_{b,pixels}((w_bk·(pred − gt))²)  =  0.5/(B·K·H·W) · Σ (w·(pred − gt))².
 * pred, target: [B, K, H, W]; weight: [B, K] (0 for joints without a label).
 */
export function jointsMseLoss(t: Tape, pred: Sym, target: Value, weight: Value): Sym {
  const [b, k, h, w] = nums(pred.shape);
  const count = (b as number) * (k as number) * (h as number) * (w as number);
  const g = t.g;
  const w4 = g.op("Reshape", [weight, g.int64s([b as number, k as number, 1, 1])], {}, { shape: [b ?? 0, k ?? 0, 1, 1] });
  const diff = g.op("Mul", [g.op("Sub", [pred.value, target]), w4], {}, { shape: pred.shape });
  const loss = t.sym(g.op("Mul", [g.op("ReduceSumSquare", [diff], { keepdims: { i: 0 } }, { shape: SCALAR }), g.scalar(0.5 / count)], {}, { shape: SCALAR }), SCALAR, pred.requiresGrad);
  t.record([pred], [loss], ([seed]) => {
    if (seed === undefined) return [];
    // dL/dpred = w·diff / count, times the seed.
    const grad = g.op("Mul", [g.op("Mul", [diff, w4]), g.op("Mul", [seed.value, g.scalar(1 / count)])], {}, { shape: pred.shape });
    return [t.sym(grad, pred.shape, true)];
  });
  return loss;
}

/** Weighted L1: L = Σ |w·(pred − target)| / (B·K·…), weight [B, K] broadcast over the remaining axes. */
export function l1Loss(t: Tape, pred: Sym, target: Value, weight: Value): Sym {
  const dims = nums(pred.shape);
  const count = dims.reduce((a, d) => a * d, 1);
  const g = t.g;
  const wShape = [dims[0] as number, dims[1] as number, ...dims.slice(2).map(() => 1)];
  const wb = g.op("Reshape", [weight, g.int64s(wShape)], {}, { shape: wShape });
  const diff = g.op("Sub", [pred.value, target], {}, { shape: pred.shape });
  const weighted = g.op("Mul", [diff, wb], {}, { shape: pred.shape });
  const loss = t.sym(g.op("Mul", [g.op("ReduceL1", [weighted], { keepdims: { i: 0 } }, { shape: SCALAR }), g.scalar(1 / count)], {}, { shape: SCALAR }), SCALAR, pred.requiresGrad);
  t.record([pred], [loss], ([seed]) => {
    if (seed === undefined) return [];
    const absW = g.op("Abs", [wb]);
    const grad = g.op("Mul", [g.op("Mul", [g.op("Sign", [diff]), absW]), g.op("Mul", [seed.value, g.scalar(1 / count)])], {}, { shape: pred.shape });
    return [t.sym(grad, pred.shape, true)];
  });
  return loss;
}

export interface SimccLossOptions {
  /** Softmax sharpening of predictions (and labels with labelSoftmax). mmpose's default 10. */
  readonly beta?: number;
  /** Pass labels through softmax(β·labels) first, as mmpose's KLDiscretLoss(label_softmax=True). */
  readonly labelSoftmax?: boolean;
  /** Mix the label distribution with the uniform one: (1 − ε)·labels + ε/bins. */
  readonly labelSmoothing?: number;
}

/**
 * SimCC's KL-divergence loss (mmpose KLDiscretLoss with target weights) for one axis, summed over axes by the
 * caller and divided by K:  L = Σ_{b,k} w_bk · mean_bins(l·(log l − log softmax(β·pred))).
 * pred, labels: [B, K, bins]; weight: [B, K]. Gradient: w·β/bins·(softmax(β·pred)·Σl − l).
 */
export function simccKlLoss(t: Tape, pred: Sym, labels: Value, weight: Value, options: SimccLossOptions = {}): Sym {
  const beta = options.beta ?? 10;
  const [b, k, bins] = nums(pred.shape);
  const g = t.g;
  let target = labels;
  if (options.labelSoftmax ?? true) target = g.op("Softmax", [g.op("Mul", [target, g.scalar(beta)])], { axis: { i: -1 } }, { shape: pred.shape });
  const smoothing = options.labelSmoothing ?? 0;
  if (smoothing > 0) target = g.op("Add", [g.op("Mul", [target, g.scalar(1 - smoothing)]), g.scalar(smoothing / (bins as number))], {}, { shape: pred.shape });
  const scaled = g.op("Mul", [pred.value, g.scalar(beta)], {}, { shape: pred.shape });
  const logP = g.op("LogSoftmax", [scaled], { axis: { i: -1 } }, { shape: pred.shape });
  // l·log l with 0·log 0 = 0, as torch's KLDivLoss.
  const positive = g.op("Greater", [target, g.scalar(0)], {}, { dtype: "bool" });
  const safeLog = g.op("Log", [g.op("Where", [positive, target, g.scalar(1)])]);
  const kl = g.op("Mul", [target, g.op("Sub", [safeLog, logP])], {}, { shape: pred.shape });
  const perJoint = reduce(g, "ReduceMean", kl, [2], false, [b ?? 0, k ?? 0]);
  const loss = t.sym(g.op("ReduceSum", [g.op("Mul", [perJoint, weight])], { keepdims: { i: 0 } }, { shape: SCALAR }), SCALAR, pred.requiresGrad);
  t.record([pred], [loss], ([seed]) => {
    if (seed === undefined) return [];
    const p = g.op("Exp", [logP]);
    const mass = g.op("ReduceSum", [target, g.int64s([2])], { keepdims: { i: 1 } });
    const w3 = g.op("Reshape", [weight, g.int64s([b as number, k as number, 1])]);
    const factor = g.op("Mul", [w3, g.op("Mul", [seed.value, g.scalar(beta / (bins as number))])]);
    const grad = g.op("Mul", [g.op("Sub", [g.op("Mul", [p, mass]), target]), factor], {}, { shape: pred.shape });
    return [t.sym(grad, pred.shape, true)];
  });
  return loss;
}

/** Distillation to a teacher's outputs (an input of the step graph): 0.5·mean((pred − teacher)²). */
export function distillMseLoss(t: Tape, pred: Sym, teacher: Value): Sym {
  const count = nums(pred.shape).reduce((a, d) => a * d, 1);
  const g = t.g;
  const diff = g.op("Sub", [pred.value, teacher], {}, { shape: pred.shape });
  const loss = t.sym(g.op("Mul", [g.op("ReduceSumSquare", [diff], { keepdims: { i: 0 } }), g.scalar(0.5 / count)], {}, { shape: SCALAR }), SCALAR, pred.requiresGrad);
  t.record([pred], [loss], ([seed]) => {
    if (seed === undefined) return [];
    return [t.sym(g.op("Mul", [diff, g.op("Mul", [seed.value, g.scalar(1 / count)])], {}, { shape: pred.shape }), pred.shape, true)];
  });
  return loss;
}

/**
 * Distillation by KL divergence with temperature T over the last axis (Hinton et al.):
 * T²·mean_rows KL(softmax(teacher/T) ‖ softmax(pred/T)). For heatmaps, flatten the spatial axes first.
 */
export function distillKlLoss(t: Tape, pred: Sym, teacher: Value, temperature = 1): Sym {
  const dims = nums(pred.shape);
  const rows = dims.slice(0, -1).reduce((a, d) => a * d, 1);
  const g = t.g;
  const q = g.op("Softmax", [g.op("Mul", [teacher, g.scalar(1 / temperature)])], { axis: { i: -1 } }, { shape: pred.shape });
  const logQ = g.op("LogSoftmax", [g.op("Mul", [teacher, g.scalar(1 / temperature)])], { axis: { i: -1 } });
  const logP = g.op("LogSoftmax", [g.op("Mul", [pred.value, g.scalar(1 / temperature)])], { axis: { i: -1 } }, { shape: pred.shape });
  const kl = g.op("ReduceSum", [g.op("Mul", [q, g.op("Sub", [logQ, logP])])], { keepdims: { i: 0 } });
  const loss = t.sym(g.op("Mul", [kl, g.scalar((temperature * temperature) / rows)], {}, { shape: SCALAR }), SCALAR, pred.requiresGrad);
  t.record([pred], [loss], ([seed]) => {
    if (seed === undefined) return [];
    const p = g.op("Exp", [logP]);
    const grad = g.op("Mul", [g.op("Sub", [p, q]), g.op("Mul", [seed.value, g.scalar(temperature / rows)])], {}, { shape: pred.shape });
    return [t.sym(grad, pred.shape, true)];
  });
  return loss;
}

/** CenterNet clamps its center probabilities to [ε, 1 − ε] so that neither log can reach −∞. */
const FOCAL_EPSILON = 1e-4;

/**
 * CenterNet's focal loss (Zhou et al., 2019, after CornerNet) on center heatmaps, from logits:
 *   p = clamp(σ(x), 1e-4, 1 − 1e-4),
 *   L = −1/max(1, P) · Σ [gt = 1]·(1 − p)^α·log p + [gt < 1]·(1 − gt)^β·p^α·log(1 − p),  α = 2, β = 4,
 * with P the number of cells where gt is exactly 1 (the objects' centers; the Gaussian splats around them
 * lower the penalty of near misses). logits, target: [B, C, h, w]. The gradient is zero where the clamp
 * bites, as torch.clamp's is.
 */
export function centerFocalLoss(t: Tape, logits: Sym, target: Value): Sym {
  const g = t.g;
  const shape = logits.shape;
  const s = g.op("Sigmoid", [logits.value], {}, { shape });
  const p = g.op("Clip", [s, g.scalar(FOCAL_EPSILON), g.scalar(1 - FOCAL_EPSILON)], {}, { shape });
  const q = g.op("Sub", [g.scalar(1), p], {}, { shape });
  const positive = g.op("Cast", [g.op("Equal", [target, g.scalar(1)], {}, { dtype: "bool", shape })], { to: { i: 1 } }, { shape });
  const negative = g.op("Sub", [g.scalar(1), positive], {}, { shape });
  // (1 − gt)^4 on the negatives only.
  const oneMinusGt = g.op("Sub", [g.scalar(1), target], {}, { shape });
  const squared = g.op("Mul", [oneMinusGt, oneMinusGt]);
  const negWeight = g.op("Mul", [g.op("Mul", [squared, squared]), negative], {}, { shape });
  const logP = g.op("Log", [p], {}, { shape });
  const logQ = g.op("Log", [q], {}, { shape });
  const posTerm = g.op("Mul", [g.op("Mul", [logP, g.op("Mul", [q, q])]), positive], {}, { shape });
  const negTerm = g.op("Mul", [g.op("Mul", [logQ, g.op("Mul", [p, p])]), negWeight], {}, { shape });
  const count = g.op("Max", [g.op("ReduceSum", [positive], { keepdims: { i: 0 } }, { shape: SCALAR }), g.scalar(1)], {}, { shape: SCALAR });
  const total = g.op("ReduceSum", [g.op("Add", [posTerm, negTerm])], { keepdims: { i: 0 } }, { shape: SCALAR });
  const loss = t.sym(g.op("Neg", [g.op("Div", [total, count])], {}, { shape: SCALAR }), SCALAR, logits.requiresGrad);
  t.record([logits], [loss], ([seed]) => {
    if (seed === undefined) return [];
    // dL/dx = dL/dp · p(1 − p), per cell (before the 1/max(1, P)): on the positives
    // −(1 − p)³ + 2p(1 − p)²·log p, on the negatives (p³ − 2p²(1 − p)·log(1 − p))·(1 − gt)^4.
    const pq = g.op("Mul", [p, q]);
    const dPos = g.op("Sub", [g.op("Mul", [g.op("Mul", [g.op("Mul", [pq, q]), logP]), g.scalar(2)]), g.op("Mul", [g.op("Mul", [q, q]), q])]);
    const dNeg = g.op("Sub", [g.op("Mul", [g.op("Mul", [p, p]), p]), g.op("Mul", [g.op("Mul", [g.op("Mul", [pq, p]), logQ]), g.scalar(2)])]);
    const perCell = g.op("Add", [g.op("Mul", [dPos, positive]), g.op("Mul", [dNeg, negWeight])]);
    const inside = g.op("And", [g.op("GreaterOrEqual", [s, g.scalar(FOCAL_EPSILON)], {}, { dtype: "bool" }), g.op("LessOrEqual", [s, g.scalar(1 - FOCAL_EPSILON)], {}, { dtype: "bool" })], {}, { dtype: "bool" });
    const clamped = g.op("Where", [inside, perCell, g.scalar(0)]);
    const grad = g.op("Mul", [clamped, g.op("Div", [seed.value, count])], {}, { shape });
    return [t.sym(grad, shape, true)];
  });
  return loss;
}

/**
 * CenterNet's RegL1Loss on dense maps: L1 at the cells the mask selects (the objects' center cells), over the
 * selected values: L = Σ mask·|pred − target| / (C·Σ mask + 1e-4). pred, target: [B, C, h, w]; mask: [B, 1, h, w]
 * (0 or 1, broadcast over the C channels). No object in the batch: 0.
 */
export function maskedL1Loss(t: Tape, pred: Sym, target: Value, mask: Value): Sym {
  const g = t.g;
  const channels = nums(pred.shape)[1] as number;
  const diff = g.op("Sub", [pred.value, target], {}, { shape: pred.shape });
  const denominator = g.op("Add", [g.op("Mul", [g.op("ReduceSum", [mask], { keepdims: { i: 0 } }, { shape: SCALAR }), g.scalar(channels)]), g.scalar(1e-4)], {}, { shape: SCALAR });
  const total = g.op("ReduceSum", [g.op("Mul", [g.op("Abs", [diff]), mask], {}, { shape: pred.shape })], { keepdims: { i: 0 } }, { shape: SCALAR });
  const loss = t.sym(g.op("Div", [total, denominator], {}, { shape: SCALAR }), SCALAR, pred.requiresGrad);
  t.record([pred], [loss], ([seed]) => {
    if (seed === undefined) return [];
    const grad = g.op("Mul", [g.op("Mul", [g.op("Sign", [diff]), mask]), g.op("Div", [seed.value, denominator])], {}, { shape: pred.shape });
    return [t.sym(grad, pred.shape, true)];
  });
  return loss;
}
