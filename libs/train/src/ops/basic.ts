import { DType, float, type Dim } from "@poseloop/onnx";
import { Tape, type Sym } from "../tape.js";
import { broadcastShape, nums, sameShape } from "./dims.js";

/** Sums `grad` (shaped like the broadcast result) down to `shape`, undoing numpy broadcasting. */
export function unbroadcast(t: Tape, grad: Sym, shape: readonly Dim[]): Sym {
  if (sameShape(grad.shape, shape)) return grad;
  const offset = grad.shape.length - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < grad.shape.length; i++) {
    if (i < offset || (shape[i - offset] === 1 && grad.shape[i] !== 1)) axes.push(i);
  }
  const reduced = t.g.op("ReduceSum", [grad.value, t.g.int64s(axes)], { keepdims: { i: 1 } });
  const out = t.g.op("Reshape", [reduced, t.g.int64s(nums(shape))], {}, { shape });
  return t.sym(out, shape, true);
}

function binary(t: Tape, opType: "Add" | "Sub" | "Mul", a: Sym, b: Sym): Sym {
  const shape = broadcastShape(a.shape, b.shape);
  const y = t.sym(t.g.op(opType, [a.value, b.value], {}, { shape }), shape, Tape.needsGrad(a, b));
  t.record([a, b], [y], ([dy]) => {
    if (dy === undefined) return [];
    const da = a.requiresGrad ? (opType === "Mul" ? mulValues(t, dy, b) : dy) : undefined;
    let db = b.requiresGrad ? (opType === "Mul" ? mulValues(t, dy, a) : dy) : undefined;
    if (db !== undefined && opType === "Sub") db = neg(t, db);
    return [da === undefined ? undefined : unbroadcast(t, da, a.shape), db === undefined ? undefined : unbroadcast(t, db, b.shape)];
  });
  return y;
}

function mulValues(t: Tape, a: Sym, b: Sym): Sym {
  const shape = broadcastShape(a.shape, b.shape);
  return t.sym(t.g.op("Mul", [a.value, b.value], {}, { shape }), shape, true);
}

function neg(t: Tape, a: Sym): Sym {
  return t.sym(t.g.op("Neg", [a.value], {}, { shape: a.shape }), a.shape, true);
}

export const add = (t: Tape, a: Sym, b: Sym): Sym => binary(t, "Add", a, b);
export const sub = (t: Tape, a: Sym, b: Sym): Sym => binary(t, "Sub", a, b);
export const mul = (t: Tape, a: Sym, b: Sym): Sym => binary(t, "Mul", a, b);

/** Floating-point precisions a tensor of the tape can have. */
export type FloatType = "float32" | "float16";

/**
 * x converted to `to` (ONNX Cast); the gradient goes back through the opposite Cast, so a tensor's gradient
 * always has the tensor's own precision (mixed precision casts fp32 master weights and activations to fp16
 * around the convolutions, and their fp16 gradients come back as fp32).
 */
export function cast(t: Tape, x: Sym, to: FloatType): Sym {
  const from = x.value.dtype;
  if (from === to) return x;
  if (from !== "float32" && from !== "float16") throw new TypeError(`cast: ${x.value.name} is ${from}, not a float tensor`);
  const y = t.sym(t.g.op("Cast", [x.value], { to: { i: DType[to] } }, { dtype: to, shape: x.shape }), x.shape, x.requiresGrad);
  t.record([x], [y], ([dy]) => [dy === undefined ? undefined : t.sym(t.g.op("Cast", [dy.value], { to: { i: DType[from] } }, { dtype: from, shape: x.shape }), x.shape, true)]);
  return y;
}

/** x · c for a constant c. */
export function scale(t: Tape, x: Sym, c: number): Sym {
  const constant = t.g.scalar(c);
  const y = t.sym(t.g.op("Mul", [x.value, constant], {}, { shape: x.shape }), x.shape, x.requiresGrad);
  t.record([x], [y], ([dy]) => [dy === undefined ? undefined : t.sym(t.g.op("Mul", [dy.value, constant], {}, { shape: x.shape }), x.shape, true)]);
  return y;
}

/** ReLU: dy where y > 0. */
export function relu(t: Tape, x: Sym): Sym {
  const y = t.sym(t.g.op("Relu", [x.value], {}, { shape: x.shape }), x.shape, x.requiresGrad);
  t.record([x], [y], ([dy]) => {
    if (dy === undefined) return [];
    const positive = t.g.op("Greater", [y.value, t.g.scalar(0)], {}, { dtype: "bool", shape: x.shape });
    return [t.sym(t.g.op("Where", [positive, dy.value, t.g.scalar(0)], {}, { shape: x.shape }), x.shape, true)];
  });
  return y;
}

/** LeakyReLU(α): dy · (x > 0 ? 1 : α). */
export function leakyRelu(t: Tape, x: Sym, alpha = 0.01): Sym {
  const y = t.sym(t.g.op("LeakyRelu", [x.value], { alpha: float(alpha) }, { shape: x.shape }), x.shape, x.requiresGrad);
  t.record([x], [y], ([dy]) => {
    if (dy === undefined) return [];
    const positive = t.g.op("Greater", [x.value, t.g.scalar(0)], {}, { dtype: "bool", shape: x.shape });
    const slope = t.g.op("Where", [positive, t.g.scalar(1), t.g.scalar(alpha)], {}, { shape: x.shape });
    return [t.sym(t.g.op("Mul", [dy.value, slope], {}, { shape: x.shape }), x.shape, true)];
  });
  return y;
}

/** ReLU6 = clip(x, 0, 6): dy where 0 < x < 6. */
export function relu6(t: Tape, x: Sym): Sym {
  const y = t.sym(t.g.op("Clip", [x.value, t.g.scalar(0), t.g.scalar(6)], {}, { shape: x.shape }), x.shape, x.requiresGrad);
  t.record([x], [y], ([dy]) => {
    if (dy === undefined) return [];
    const above = t.g.op("Greater", [x.value, t.g.scalar(0)], {}, { dtype: "bool", shape: x.shape });
    const below = t.g.op("Less", [x.value, t.g.scalar(6)], {}, { dtype: "bool", shape: x.shape });
    const inside = t.g.op("And", [above, below], {}, { dtype: "bool", shape: x.shape });
    return [t.sym(t.g.op("Where", [inside, dy.value, t.g.scalar(0)], {}, { shape: x.shape }), x.shape, true)];
  });
  return y;
}

/** HardSwish = x · relu6(x + 3) / 6: derivative 0 below −3, 1 above 3, (2x + 3)/6 between. */
export function hardSwish(t: Tape, x: Sym): Sym {
  const y = t.sym(t.g.op("HardSwish", [x.value], {}, { shape: x.shape }), x.shape, x.requiresGrad);
  t.record([x], [y], ([dy]) => {
    if (dy === undefined) return [];
    const middle = t.g.op("Div", [t.g.op("Add", [t.g.op("Mul", [x.value, t.g.scalar(2)]), t.g.scalar(3)]), t.g.scalar(6)]);
    const low = t.g.op("Less", [x.value, t.g.scalar(-3)], {}, { dtype: "bool" });
    const high = t.g.op("Greater", [x.value, t.g.scalar(3)], {}, { dtype: "bool" });
    const slope = t.g.op("Where", [low, t.g.scalar(0), t.g.op("Where", [high, t.g.scalar(1), middle])]);
    return [t.sym(t.g.op("Mul", [dy.value, slope], {}, { shape: x.shape }), x.shape, true)];
  });
  return y;
}

/** Sigmoid: dy · σ(1 − σ). */
export function sigmoid(t: Tape, x: Sym): Sym {
  const y = t.sym(t.g.op("Sigmoid", [x.value], {}, { shape: x.shape }), x.shape, x.requiresGrad);
  t.record([x], [y], ([dy]) => {
    if (dy === undefined) return [];
    const slope = t.g.op("Mul", [y.value, t.g.op("Sub", [t.g.scalar(1), y.value])]);
    return [t.sym(t.g.op("Mul", [dy.value, slope], {}, { shape: x.shape }), x.shape, true)];
  });
  return y;
}

/** Natural logarithm: dy / x. */
export function log(t: Tape, x: Sym): Sym {
  const y = t.sym(t.g.op("Log", [x.value], {}, { shape: x.shape }), x.shape, x.requiresGrad);
  t.record([x], [y], ([dy]) => [dy === undefined ? undefined : t.sym(t.g.op("Div", [dy.value, x.value], {}, { shape: x.shape }), x.shape, true)]);
  return y;
}

/** SiLU = x · σ(x): derivative σ · (1 + x · (1 − σ)). */
export function silu(t: Tape, x: Sym): Sym {
  const s = t.g.op("Sigmoid", [x.value], {}, { shape: x.shape });
  const y = t.sym(t.g.op("Mul", [x.value, s], {}, { shape: x.shape }), x.shape, x.requiresGrad);
  t.record([x], [y], ([dy]) => {
    if (dy === undefined) return [];
    const oneMinus = t.g.op("Sub", [t.g.scalar(1), s]);
    const slope = t.g.op("Mul", [s, t.g.op("Add", [t.g.scalar(1), t.g.op("Mul", [x.value, oneMinus])])]);
    return [t.sym(t.g.op("Mul", [dy.value, slope], {}, { shape: x.shape }), x.shape, true)];
  });
  return y;
}

/** Reshape to a static `shape` (0 copies a dimension, -1 infers one). */
export function reshape(t: Tape, x: Sym, shape: readonly Dim[], target: readonly number[]): Sym {
  const y = t.sym(t.g.op("Reshape", [x.value, t.g.int64s(target)], {}, { shape }), shape, x.requiresGrad);
  t.record([x], [y], ([dy]) => [dy === undefined ? undefined : t.sym(t.g.op("Reshape", [dy.value, t.g.int64s(nums(x.shape))], {}, { shape: x.shape }), x.shape, true)]);
  return y;
}

/** Flattens all dimensions after the first: [N, C, H, W] → [N, C·H·W]. */
export function flatten(t: Tape, x: Sym): Sym {
  const rest = x.shape.slice(1).reduce<number>((n, d) => n * (d as number), 1);
  return reshape(t, x, [x.shape[0] ?? 0, rest], [0, -1]);
}

/** Concatenation along `axis`; the gradient is sliced back to each input. */
export function concat(t: Tape, xs: readonly Sym[], axis: number): Sym {
  const shape = [...(xs[0]?.shape ?? [])];
  shape[axis] = xs.reduce((n, x) => n + (x.shape[axis] as number), 0);
  const y = t.sym(t.g.op("Concat", xs.map((x) => x.value), { axis: { i: axis } }, { shape }), shape, Tape.needsGrad(...xs));
  t.record(xs, [y], ([dy]) => {
    if (dy === undefined) return [];
    const splits = xs.map((x) => x.shape[axis] as number);
    const parts = t.g.node("Split", [dy.value, t.g.int64s(splits)], { axis: { i: axis } }, { outputs: xs.map((x) => ({ shape: x.shape })) });
    return xs.map((x, i) => (x.requiresGrad ? t.sym(parts[i] as NonNullable<(typeof parts)[number]>, x.shape, true) : undefined));
  });
  return y;
}

/** Inverted dropout with a mask given as an input (so that resumed runs replay the same masks). */
export function dropout(t: Tape, x: Sym, mask: Sym, p: number): Sym {
  const keep = t.g.scalar(1 / (1 - p));
  const scaledMask = t.g.op("Mul", [mask.value, keep], {}, { shape: mask.shape });
  const y = t.sym(t.g.op("Mul", [x.value, scaledMask], {}, { shape: x.shape }), x.shape, x.requiresGrad);
  t.record([x], [y], ([dy]) => [dy === undefined ? undefined : t.sym(t.g.op("Mul", [dy.value, scaledMask], {}, { shape: x.shape }), x.shape, true)]);
  return y;
}
