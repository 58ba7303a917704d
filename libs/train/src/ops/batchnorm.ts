import { float, type Value } from "@poseloop/onnx";
import { Tape, type Sym } from "../tape.js";
import { num } from "./dims.js";
import { reduce } from "./reduce.js";

export interface BatchNormTrainResult {
  readonly y: Sym;
  /** New running statistics (PyTorch semantics: momentum weights the batch, the variance is unbiased). */
  readonly runningMean: Value;
  readonly runningVar: Value;
}

/**
 * Batch normalization in training mode, written out because ONNX's own training mode differs from PyTorch
 * (biased running variance, momentum the other way round). x: [N, C, H, W]; gamma, beta: [C];
 * runningMean, runningVar: [C] (inputs of the step graph).
 *   y = γ·(x − μ)/√(σ² + ε) + β, with μ, σ² the batch mean and biased variance;
 *   dx = γ/√(σ² + ε) · (dy − mean(dy) − x̂·mean(dy·x̂)),  dγ = Σ dy·x̂,  dβ = Σ dy.
 * Written for few passes over the activations (the step's elementwise ops are memory-bound): x̂ is never
 * materialized — with c = x − μ and s = γ/√(σ² + ε) per channel, y = c·s + β, Σ dy·x̂ = Σ(dy·c)/√(σ² + ε),
 * and the means in dx are the sums dγ and dβ already took, divided by the count.
 */
export function batchNormTrain(
  t: Tape,
  x: Sym,
  gamma: Sym,
  beta: Sym,
  runningMean: Value,
  runningVar: Value,
  options: { epsilon?: number; momentum?: number } = {},
): BatchNormTrainResult {
  const epsilon = options.epsilon ?? 1e-5;
  const momentum = options.momentum ?? 0.1;
  const [n, c, h, w] = x.shape;
  const channels = num(c);
  const count = num(n) * num(h) * num(w);
  const g = t.g;
  const perChannel = [1, channels, 1, 1];
  const mean = reduce(g, "ReduceMean", x.value, [0, 2, 3], true, perChannel);
  const centered = g.op("Sub", [x.value, mean], {}, { shape: x.shape });
  const variance = reduce(g, "ReduceMean", g.op("Mul", [centered, centered]), [0, 2, 3], true, perChannel);
  const invStd = g.op("Reciprocal", [g.op("Sqrt", [g.op("Add", [variance, g.scalar(epsilon)])])], {}, { shape: perChannel });
  const shape4 = g.int64s(perChannel);
  const gamma4 = g.op("Reshape", [gamma.value, shape4], {}, { shape: perChannel });
  const beta4 = g.op("Reshape", [beta.value, shape4], {}, { shape: perChannel });
  const scale4 = g.op("Mul", [gamma4, invStd], {}, { shape: perChannel });
  const y = t.sym(g.op("Add", [g.op("Mul", [centered, scale4]), beta4], {}, { shape: x.shape }), x.shape, Tape.needsGrad(x, gamma, beta));

  const flat = g.int64s([channels]);
  const batchMean = g.op("Reshape", [mean, flat], {}, { shape: [channels] });
  const unbiased = g.op("Reshape", [g.op("Mul", [variance, g.scalar(count / Math.max(1, count - 1))]), flat], {}, { shape: [channels] });
  const keepOld = g.scalar(1 - momentum);
  const takeNew = g.scalar(momentum);
  const newMean = g.op("Add", [g.op("Mul", [runningMean, keepOld]), g.op("Mul", [batchMean, takeNew])], {}, { shape: [channels] });
  const newVar = g.op("Add", [g.op("Mul", [runningVar, keepOld]), g.op("Mul", [unbiased, takeNew])], {}, { shape: [channels] });

  t.record([x, gamma, beta], [y], ([dy]) => {
    if (dy === undefined) return [];
    const sumDy = reduce(g, "ReduceSum", dy.value, [0, 2, 3], true, perChannel);
    const sumDyC = reduce(g, "ReduceSum", g.op("Mul", [dy.value, centered], {}, { shape: x.shape }), [0, 2, 3], true, perChannel);
    const sumDyXHat = g.op("Mul", [sumDyC, invStd], {}, { shape: perChannel });
    let dx: Sym | undefined;
    if (x.requiresGrad) {
      // dx = s·(dy − Σdy/m) − c · s·Σ(dy·x̂)/(m·√(σ² + ε))
      const meanDy = g.op("Mul", [sumDy, g.scalar(1 / count)], {}, { shape: perChannel });
      const cCoef = g.op("Mul", [g.op("Mul", [scale4, g.op("Mul", [sumDyXHat, invStd])]), g.scalar(1 / count)], {}, { shape: perChannel });
      const shifted = g.op("Mul", [g.op("Sub", [dy.value, meanDy], {}, { shape: x.shape }), scale4], {}, { shape: x.shape });
      dx = t.sym(g.op("Sub", [shifted, g.op("Mul", [centered, cCoef], {}, { shape: x.shape })], {}, { shape: x.shape }), x.shape, true);
    }
    return [
      dx,
      gamma.requiresGrad ? t.sym(g.op("Reshape", [sumDyXHat, flat], {}, { shape: [channels] }), [channels], true) : undefined,
      beta.requiresGrad ? t.sym(g.op("Reshape", [sumDy, flat], {}, { shape: [channels] }), [channels], true) : undefined,
    ];
  });
  return { y, runningMean: newMean, runningVar: newVar };
}

/**
 * Batch normalization with fixed statistics (inference, or frozen BN while fine-tuning):
 * y = (x − μ)·γ/√(σ² + ε) + β. Differentiable in x, γ and β.
 */
export function batchNormEval(t: Tape, x: Sym, gamma: Sym, beta: Sym, runningMean: Value, runningVar: Value, epsilon = 1e-5): Sym {
  const g = t.g;
  const y = t.sym(
    g.op("BatchNormalization", [x.value, gamma.value, beta.value, runningMean, runningVar], { epsilon: float(epsilon) }, { shape: x.shape }),
    x.shape,
    Tape.needsGrad(x, gamma, beta),
  );
  t.record([x, gamma, beta], [y], ([dy]) => {
    if (dy === undefined) return [];
    const channels = num(x.shape[1]);
    const perChannel = [1, channels, 1, 1];
    const shape4 = g.int64s(perChannel);
    const invStd = g.op("Reciprocal", [g.op("Sqrt", [g.op("Add", [runningVar, g.scalar(epsilon)])])], {}, { shape: [channels] });
    const invStd4 = g.op("Reshape", [invStd, shape4], {}, { shape: perChannel });
    const gamma4 = g.op("Reshape", [gamma.value, shape4], {}, { shape: perChannel });
    const axes = g.int64s([0, 2, 3]);
    const xHat = g.op("Mul", [g.op("Sub", [x.value, g.op("Reshape", [runningMean, shape4])]), invStd4], {}, { shape: x.shape });
    return [
      x.requiresGrad ? t.sym(g.op("Mul", [dy.value, g.op("Mul", [gamma4, invStd4])], {}, { shape: x.shape }), x.shape, true) : undefined,
      gamma.requiresGrad ? t.sym(g.op("ReduceSum", [g.op("Mul", [dy.value, xHat]), axes], { keepdims: { i: 0 } }, { shape: [channels] }), [channels], true) : undefined,
      beta.requiresGrad ? t.sym(g.op("ReduceSum", [dy.value, axes], { keepdims: { i: 0 } }, { shape: [channels] }), [channels], true) : undefined,
    ];
  });
  return y;
}
