import * as ort from "onnxruntime-node";
import { encodeModel, GraphBuilder, hostTensor, ints, type ModelProto } from "@poseloop/onnx";
import { Rng } from "@poseloop/train";
import { describe, expect, it } from "vitest";
import { decomposeConvTransposes, depthToSpaceAsReshapes } from "./convtranspose-decomposition.js";

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

function deconvModel(spec: Deconv, options: { relu?: boolean; batch?: number | string } = {}): ModelProto {
  const rng = new Rng(11);
  const g = new GraphBuilder({ name: "deconv" });
  const x = g.input("x", "float32", [options.batch ?? 2, CIN, H, W]);
  const weight = g.initializer("w", hostTensor("float32", [CIN, COUT, spec.kernel, spec.kernel], Float32Array.from({ length: CIN * COUT * spec.kernel ** 2 }, () => rng.normal())));
  const bias = spec.bias ? g.initializer("b", hostTensor("float32", [COUT], Float32Array.from({ length: COUT }, () => rng.normal()))) : undefined;
  const attrs = { kernel_shape: ints([spec.kernel, spec.kernel]), strides: ints([spec.stride, spec.stride]), pads: ints(spec.pads), ...(spec.outputPadding ? { output_padding: ints(spec.outputPadding) } : {}) };
  const [deconv] = g.node("ConvTranspose", bias === undefined ? [x, weight] : [x, weight, bias], attrs, { name: "deconv" });
  const y = options.relu === true ? g.node("Relu", [deconv])[0] : deconv;
  g.output(y as never, "y");
  return g.build();
}

function worstDifference(a: ort.Tensor, b: ort.Tensor): number {
  const reference = a.data as Float32Array;
  const got = b.data as Float32Array;
  let worst = 0;
  for (let i = 0; i < reference.length; i++) worst = Math.max(worst, Math.abs((reference[i] as number) - (got[i] as number)));
  return worst;
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

  it("moves a ReLU that reads the deconvolution onto each phase's Conv, with the same result", async () => {
    const model = deconvModel({ kernel: 4, stride: 2, pads: [1, 1, 1, 1], bias: true }, { relu: true });
    const { model: rewritten } = decomposeConvTransposes(model);
    const ops = (rewritten.graph?.node ?? []).map((node) => node.opType);
    expect(ops).toEqual(["Conv", "Conv", "Conv", "Conv", "Relu", "Relu", "Relu", "Relu", "Concat", "DepthToSpace", "Identity"]);
    const [a, b] = await Promise.all([run(model, x), run(rewritten, x)]);
    expect(Math.min(...(a.data as Float32Array))).toBe(0);
    expect(worstDifference(a, b)).toBeLessThan(1e-4);
  });

  it("leaves a ConvTranspose alone where the output is not exactly stride times the input", () => {
    const { decomposed } = decomposeConvTransposes(deconvModel({ kernel: 3, stride: 2, pads: [0, 0, 0, 0], bias: false }));
    expect(decomposed).toBe(0);
  });
});

describe("depthToSpaceAsReshapes", () => {
  const rng = new Rng(9);
  const x = new ort.Tensor("float32", Float32Array.from({ length: 2 * CIN * H * W }, () => rng.normal()), [2, CIN, H, W]);

  it.each<[string, Deconv, string[]]>([
    ["DCR (per phase)", { kernel: 4, stride: 2, pads: [1, 1, 1, 1], bias: true }, ["Conv", "Conv", "Conv", "Conv", "Concat", "Transpose", "Reshape", "Transpose", "Reshape", "Transpose", "Identity"]],
    // A 2×2 kernel at stride 3 leaves one phase without taps: the union form.
    ["CRD (the union form)", { kernel: 2, stride: 3, pads: [0, 0, 0, 0], outputPadding: [1, 1], bias: true }, ["Conv", "Reshape", "Transpose", "Reshape", "Identity"]],
  ])("rewrites %s DepthToSpace as the reshapes and transpose it is defined as, with the same result", async (_name, spec, ops) => {
    const decomposed = decomposeConvTransposes(deconvModel(spec, { batch: "n" })).model;
    const interleave = decomposed.graph?.node.find((node) => node.opType === "DepthToSpace");
    expect(interleave).toBeDefined();
    const { model: rewritten, replaced } = depthToSpaceAsReshapes(decomposed, new Map([[interleave?.input[0] as string, [2, COUT * spec.stride ** 2, H, W]]]));
    expect(replaced).toBe(1);
    expect(rewritten.graph?.node.map((node) => node.opType)).toEqual(ops);
    const [a, b] = await Promise.all([run(decomposed, x), run(rewritten, x)]);
    expect(b.dims).toEqual(a.dims);
    expect(worstDifference(a, b)).toBe(0);
    // The batch stays free: another batch size runs too.
    const one = new ort.Tensor("float32", (x.data).subarray(0, CIN * H * W), [1, CIN, H, W]);
    expect((await run(rewritten, one)).dims).toEqual([1, COUT, H * spec.stride, W * spec.stride]);
  });

  it("keeps DepthToSpace in a model whose input size is not fixed, or whose shape calibration did not see", () => {
    const dynamic = decomposeConvTransposes(deconvModel({ kernel: 4, stride: 2, pads: [1, 1, 1, 1], bias: false }, { batch: "n" })).model;
    const name = dynamic.graph?.node.find((node) => node.opType === "DepthToSpace")?.input[0] as string;
    expect(depthToSpaceAsReshapes(dynamic, new Map([[name, [2, COUT * 4, H, W]]])).replaced).toBe(1);
    expect(depthToSpaceAsReshapes(dynamic, new Map()).replaced).toBe(0);
    const input = dynamic.graph?.input[0]?.type?.value;
    if (input?.case === "tensorType") {
      const dim = input.value.shape?.dim[2];
      if (dim !== undefined) dim.value = { case: "dimParam", value: "height" };
    }
    expect(depthToSpaceAsReshapes(dynamic, new Map([[name, [2, COUT * 4, H, W]]])).replaced).toBe(0);
  });
});
