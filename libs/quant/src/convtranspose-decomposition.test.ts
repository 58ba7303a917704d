import * as ort from "onnxruntime-node";
import { encodeModel, GraphBuilder, hostTensor, ints, type ModelProto } from "@poseloop/onnx";
import { Rng } from "@poseloop/train";
import { describe, expect, it } from "vitest";
import { decomposeConvTransposes } from "./convtranspose-decomposition.js";

interface Deconv {
  kernel: number;
  stride: number;
  pads: [number, number, number, number];
  outputPadding?: [number, number];
  bias: boolean;
}

const CIN = 5;
const COUT = 3;
const H = 6;
const W = 4;

function deconvModel(spec: Deconv): ModelProto {
  const rng = new Rng(11);
  const g = new GraphBuilder({ name: "deconv" });
  const x = g.input("x", "float32", [2, CIN, H, W]);
  const weight = g.initializer("w", hostTensor("float32", [CIN, COUT, spec.kernel, spec.kernel], Float32Array.from({ length: CIN * COUT * spec.kernel ** 2 }, () => rng.normal())));
  const bias = spec.bias ? g.initializer("b", hostTensor("float32", [COUT], Float32Array.from({ length: COUT }, () => rng.normal()))) : undefined;
  const attrs = { kernel_shape: ints([spec.kernel, spec.kernel]), strides: ints([spec.stride, spec.stride]), pads: ints(spec.pads), ...(spec.outputPadding ? { output_padding: ints(spec.outputPadding) } : {}) };
  const [y] = g.node("ConvTranspose", bias === undefined ? [x, weight] : [x, weight, bias], attrs, { name: "deconv" });
  g.output(y as never, "y");
  return g.build();
}

async function run(model: ModelProto, x: ort.Tensor): Promise<ort.Tensor> {
  const session = await ort.InferenceSession.create(encodeModel(model), { graphOptimizationLevel: "disabled" });
  try {
    return (await session.run({ x }))["y"] as ort.Tensor;
  } finally {
    await session.release();
  }
}

describe("decomposeConvTransposes", () => {
  const rng = new Rng(5);
  const x = new ort.Tensor("float32", Float32Array.from({ length: 2 * CIN * H * W }, () => rng.normal()), [2, CIN, H, W]);

  it.each<[string, Deconv, { convs: number; weights: number }]>([
    // SimpleBaseline's deconvolution: four 2×2 phase kernels, exactly the 16 original taps per channel pair.
    ["4×4 stride 2 pad 1", { kernel: 4, stride: 2, pads: [1, 1, 1, 1], bias: false }, { convs: 4, weights: 16 }],
    ["4×4 stride 2 pad 1 with bias", { kernel: 4, stride: 2, pads: [1, 1, 1, 1], bias: true }, { convs: 4, weights: 16 }],
    ["2×2 stride 2 pad 0", { kernel: 2, stride: 2, pads: [0, 0, 0, 0], bias: true }, { convs: 4, weights: 4 }],
    ["3×3 stride 2 pad 1 output padding 1", { kernel: 3, stride: 2, pads: [1, 1, 1, 1], outputPadding: [1, 1], bias: true }, { convs: 4, weights: 9 }],
    ["6×6 stride 3 pad 3 before 0 after", { kernel: 6, stride: 3, pads: [3, 3, 0, 0], bias: false }, { convs: 9, weights: 36 }],
  ])("%s equals the ConvTranspose in float and keeps its weight count", async (_name, spec, expected) => {
    const model = deconvModel(spec);
    const { model: rewritten, decomposed } = decomposeConvTransposes(model);
    expect(decomposed).toBe(1);
    const nodes = rewritten.graph?.node ?? [];
    expect(nodes.some((node) => node.opType === "ConvTranspose")).toBe(false);
    expect(nodes.filter((node) => node.opType === "Conv")).toHaveLength(expected.convs);
    const weightCount = (rewritten.graph?.initializer ?? []).filter((t) => t.dims.length === 4).reduce((n, t) => n + t.dims.reduce((a, b) => a * Number(b), 1), 0);
    expect(weightCount).toBe(CIN * COUT * expected.weights);

    const [a, b] = await Promise.all([run(model, x), run(rewritten, x)]);
    expect(b.dims).toEqual(a.dims);
    expect(a.dims).toEqual([2, COUT, H * spec.stride, W * spec.stride]);
    const reference = a.data as Float32Array;
    const got = b.data as Float32Array;
    let worst = 0;
    for (let i = 0; i < reference.length; i++) worst = Math.max(worst, Math.abs((reference[i] as number) - (got[i] as number)));
    expect(worst).toBeLessThan(1e-4);
  });

  it("leaves a ConvTranspose alone where the output is not exactly stride times the input", () => {
    const { decomposed } = decomposeConvTransposes(deconvModel({ kernel: 3, stride: 2, pads: [0, 0, 0, 0], bias: false }));
    expect(decomposed).toBe(0);
  });
});
