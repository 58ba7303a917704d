import { SeededRandom } from "@poseloop/core";
import { encodeModel, GraphBuilder, hostTensor } from "@poseloop/onnx";
import * as ort from "onnxruntime-node";
import { Tape, type Sym } from "../tape.js";

export interface GradCheckInput {
  readonly name: string;
  readonly shape: readonly number[];
  /** Checked against finite differences. Inputs without it are constants (targets, weights). */
  readonly requiresGrad?: boolean;
  /** Values; default standard normal. */
  readonly values?: Float32Array;
}

export interface GradCheckResult {
  /** Worst |analytic − numeric| / (atol + rtol·max(|analytic|, |numeric|)); ≤ 1 passes. */
  readonly worst: number;
  readonly details: string;
}

/**
 * Compares the gradients the tape emits with central finite differences of the same graph, on up to
 * `samples` elements of each differentiable input. The op's output y is reduced to the loss Σ y·r with a
 * fixed random r, so every output element matters.
 */
export async function gradCheck(
  build: (t: Tape, inputs: readonly Sym[]) => Sym,
  inputs: readonly GradCheckInput[],
  options: { seed?: number; samples?: number; epsilon?: number; rtol?: number; atol?: number; nchwcBlock?: number } = {},
): Promise<GradCheckResult> {
  const random = SeededRandom.fromSeed32(options.seed ?? 1);
  const values = inputs.map((input) => input.values ?? Float32Array.from({ length: input.shape.reduce((a, b) => a * b, 1) }, () => random.normalPaired()));
  const epsilon = options.epsilon ?? 1e-2;
  const rtol = options.rtol ?? 2e-2;
  const atol = options.atol ?? 2e-3;

  const graph = (withGrad: boolean): { bytes: Uint8Array; gradNames: string[] } => {
    const g = new GraphBuilder({ name: "gradcheck" });
    const t = new Tape(g, options.nchwcBlock === undefined ? {} : { nchwcBlock: options.nchwcBlock });
    const syms = inputs.map((input) => t.sym(g.input(input.name, "float32", input.shape), input.shape, withGrad && input.requiresGrad === true));
    const y = build(t, syms);
    const shape = y.shape.map(Number);
    const r = g.constant(hostTensor("float32", shape, Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i * 0.7 + 0.3))), "r");
    g.output(g.op("ReduceSum", [g.op("Mul", [y.value, r])], { keepdims: { i: 0 } }), "loss");
    const gradNames: string[] = [];
    if (withGrad) {
      const wrt = syms.filter((s) => s.requiresGrad);
      const grads = t.gradients(y, wrt, t.sym(r, shape, false));
      for (const s of wrt) {
        const grad = grads.get(s);
        if (grad === undefined) throw new Error(`no gradient reaches ${s.value.name}`);
        gradNames.push(g.output(grad.value, `grad_${s.value.name}`).name);
      }
    }
    return { bytes: encodeModel(g.build()), gradNames };
  };

  const full = graph(true);
  const forward = graph(false);
  const gradSession = await ort.InferenceSession.create(full.bytes);
  const lossSession = await ort.InferenceSession.create(forward.bytes);
  try {
    const feeds = (vals: readonly Float32Array[]): Record<string, ort.Tensor> =>
      Object.fromEntries(inputs.map((input, i) => [input.name, new ort.Tensor("float32", vals[i] as Float32Array, [...input.shape])]));
    const analytic = await gradSession.run(feeds(values));
    let worst = 0;
    let details = "";
    let gradIndex = 0;
    for (let i = 0; i < inputs.length; i++) {
      const input = inputs[i] as GradCheckInput;
      if (input.requiresGrad !== true) continue;
      const grad = analytic[full.gradNames[gradIndex++] as string]?.data as Float32Array;
      const base = values[i] as Float32Array;
      const count = Math.min(options.samples ?? 24, base.length);
      const picked = new Set<number>();
      while (picked.size < count) picked.add(count === base.length ? picked.size : random.int(0, base.length - 1));
      for (const index of picked) {
        const original = base[index] as number;
        const probe = async (delta: number): Promise<number> => {
          const copy = values.slice();
          const changed = Float32Array.from(base);
          changed[index] = original + delta;
          copy[i] = changed;
          const out = await lossSession.run(feeds(copy));
          return Number((out["loss"]?.data as Float32Array)[0]);
        };
        const numeric = ((await probe(epsilon)) - (await probe(-epsilon))) / (2 * epsilon);
        const a = grad[index] as number;
        const score = Math.abs(a - numeric) / (atol + rtol * Math.max(Math.abs(a), Math.abs(numeric)));
        if (score > worst) {
          worst = score;
          details = `${input.name}[${index}]: analytic ${a}, numeric ${numeric}`;
        }
      }
    }
    return { worst, details };
  } finally {
    await gradSession.release();
    await lossSession.release();
  }
}
