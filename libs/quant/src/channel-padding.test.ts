import * as ort from "onnxruntime-node";
import { encodeModel, fromTensorProto, GraphBuilder, hostTensor, int, ints, type ModelProto } from "@poseloop/onnx";
import { Rng } from "@poseloop/train";
import { describe, expect, it } from "vitest";
import { padConvInputChannels } from "./channel-padding.js";
import { quantizeModel } from "./quantize.js";

const H = 12;
const W = 10;

/** x (N×cin×H×W) → Conv (3×3, stride 2) → Relu → Conv (group `group2`) → y; the second conv reads 8 channels. */
function stemModel(cin: number, options: { group?: number; sharedWeight?: boolean } = {}): ModelProto {
  const rng = new Rng(3);
  const g = new GraphBuilder({ name: "stem" });
  const random = (n: number) => Float32Array.from({ length: n }, () => rng.normal());
  const x = g.input("x", "float32", [2, cin, H, W]);
  const group = options.group ?? 1;
  const w1 = g.initializer("stem.weight", hostTensor("float32", [8, cin / group, 3, 3], random((8 * cin * 9) / group)));
  const b1 = g.initializer("stem.bias", hostTensor("float32", [8], random(8)));
  const [c1] = g.node("Conv", [x, w1, b1], { kernel_shape: ints([3, 3]), strides: ints([2, 2]), pads: ints([1, 1, 1, 1]), group: int(group) }, { name: "stem" });
  const [r1] = g.node("Relu", [c1]);
  const w2 = g.initializer("head.weight", hostTensor("float32", [5, 8, 1, 1], random(40)));
  const [c2] = g.node("Conv", [r1, w2], { kernel_shape: ints([1, 1]) }, { name: "head" });
  const out = options.sharedWeight === true ? g.node("Add", [c2, g.node("Conv", [x, w1, b1], { kernel_shape: ints([3, 3]), strides: ints([2, 2]), pads: ints([1, 1, 1, 1]) })[0]])[0] : c2;
  g.output(out as never, "y");
  return g.build();
}

async function run(model: ModelProto, x: ort.Tensor): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(encodeModel(model), { graphOptimizationLevel: "disabled" });
  try {
    return (await session.run({ x }))["y"]!.data as Float32Array;
  } finally {
    await session.release();
  }
}

function input(cin: number): ort.Tensor {
  const rng = new Rng(9);
  return new ort.Tensor("float32", Float32Array.from({ length: 2 * cin * H * W }, () => rng.normal()), [2, cin, H, W]);
}

describe("padConvInputChannels", () => {
  it.each([1, 3, 6])("pads a %i-channel stem to a multiple of 4 and computes the same function", async (cin) => {
    const model = stemModel(cin);
    const { model: padded, padded: count } = padConvInputChannels(model);
    expect(count).toBe(1);
    const wanted = Math.ceil(cin / 4) * 4;
    const weight = padded.graph!.initializer.find((t) => t.name === "stem.weight")!;
    expect(weight.dims.map(Number)).toEqual([8, wanted, 3, 3]);
    // The original channels keep their weights, the new ones are zero.
    const before = fromTensorProto(model.graph!.initializer.find((t) => t.name === "stem.weight")!).data as Float32Array;
    const after = fromTensorProto(weight).data as Float32Array;
    expect(Array.from(after.subarray(0, cin * 9))).toEqual(Array.from(before.subarray(0, cin * 9)));
    expect(after.subarray(cin * 9, wanted * 9).every((v) => v === 0)).toBe(true);
    expect(padded.graph!.node.map((n) => n.opType)).toEqual(["Pad", ...model.graph!.node.map((n) => n.opType)]);
    const x = input(cin);
    const [reference, got] = [await run(model, x), await run(padded, x)];
    const worst = reference.reduce((m, v, i) => Math.max(m, Math.abs(v - (got[i] as number))), 0);
    expect(worst).toBeLessThan(1e-5);
    // The source model is untouched.
    expect(model.graph!.node.some((n) => n.opType === "Pad")).toBe(false);
  });

  it("leaves aligned, grouped, shared-weight and inner convolutions alone", () => {
    // `inner` reads 6 channels in its second convolution: not a graph input, so not padded.
    const inner = stemModel(4);
    const head = inner.graph!.initializer.find((t) => t.name === "head.weight")!;
    Object.assign(head, { dims: [5n, 6n, 1n, 1n], floatData: head.floatData.slice(0, 30) });
    for (const model of [stemModel(4), stemModel(8), stemModel(3, { group: 3 }), stemModel(3, { sharedWeight: true }), inner]) {
      const { model: out, padded } = padConvInputChannels(model);
      expect(padded).toBe(0);
      expect(out.graph!.node.map((n) => n.opType)).toEqual(model.graph!.node.map((n) => n.opType));
    }
  });

  it("quantization pads the RGB stem and the int8 model still follows the float one", async () => {
    const model = stemModel(3);
    const rng = new Rng(4);
    const feeds = [0, 1, 2].map(() => ({ x: new ort.Tensor("float32", Float32Array.from({ length: 2 * 3 * H * W }, () => rng.normal()), [2, 3, H, W]) }));
    const quantized = await quantizeModel(model, feeds);
    expect(quantized.report.paddedConvInputs).toBe(1);
    const [reference, got] = [await run(model, feeds[0]!.x), await run(quantized.model, feeds[0]!.x)];
    let signal = 0;
    let noise = 0;
    reference.forEach((v, i) => {
      signal += v * v;
      noise += (v - (got[i] as number)) ** 2;
    });
    expect(10 * Math.log10(signal / noise)).toBeGreaterThan(25);
  });
});
