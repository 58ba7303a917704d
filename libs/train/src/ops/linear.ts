import { Tape, type Sym } from "../tape.js";

/** Fully connected layer: y = x·Wᵀ + b with x [N, in], W [out, in], b [out]. */
export function linear(t: Tape, x: Sym, w: Sym, b: Sym | undefined): Sym {
  const shape = [x.shape[0] ?? 0, w.shape[0] ?? 0];
  const y = t.sym(t.g.op("Gemm", [x.value, w.value, b?.value], { transB: { i: 1 } }, { shape }), shape, Tape.needsGrad(x, w, b));
  t.record(b === undefined ? [x, w] : [x, w, b], [y], ([dy]) => {
    if (dy === undefined) return [];
    return [
      x.requiresGrad ? t.sym(t.g.op("MatMul", [dy.value, w.value], {}, { shape: x.shape }), x.shape, true) : undefined,
      w.requiresGrad ? t.sym(t.g.op("Gemm", [dy.value, x.value], { transA: { i: 1 } }, { shape: w.shape }), w.shape, true) : undefined,
      b?.requiresGrad === true ? t.sym(t.g.op("ReduceSum", [dy.value, t.g.int64s([0])], { keepdims: { i: 0 } }, { shape: b.shape }), b.shape, true) : undefined,
    ];
  });
  return y;
}
