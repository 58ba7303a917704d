import * as ort from "onnxruntime-node";
import { AppError, Code } from "@poseloop/core";
import { describe, expect, it } from "vitest";
import { decodeModel, encodeModel, float, foldBatchNorms, fromTensorProto, GraphBuilder, hostTensor, inspectModel, ints, toTensorProto } from "@poseloop/onnx";

function random(count: number, seed: number, scale = 1): Float32Array {
  let s = seed;
  return Float32Array.from({ length: count }, () => {
    s = (s * 1664525 + 1013904223) % 4294967296;
    return (s / 4294967296 - 0.5) * 2 * scale;
  });
}

async function run(bytes: Uint8Array, input: Float32Array, dims: number[]): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(bytes);
  try {
    const out = await session.run({ x: new ort.Tensor("float32", input, dims) });
    return out["y"]?.data as Float32Array;
  } finally {
    await session.release();
  }
}

/** conv (or transposed conv) → BN → y, with random weights and statistics. */
function convBn(kind: "Conv" | "ConvTranspose", group: number, bias: boolean): Uint8Array {
  const g = new GraphBuilder({ name: "conv_bn" });
  const x = g.input("x", "float32", ["n", 4, 6, 5]);
  const cout = 6;
  const w = kind === "Conv" ? g.initializer("w", hostTensor("float32", [cout, 4 / group, 3, 3], random((cout * 4 * 9) / group, 1))) : g.initializer("w", hostTensor("float32", [4, cout / group, 3, 3], random((4 * cout * 9) / group, 2)));
  const b = bias ? g.initializer("b", hostTensor("float32", [cout], random(cout, 3))) : undefined;
  const conv = g.op(kind, [x, w, b], { pads: ints([1, 1, 1, 1]), group: { i: group }, strides: ints(kind === "Conv" ? [1, 1] : [2, 2]) });
  const bnInputs = [
    g.initializer("gamma", hostTensor("float32", [cout], random(cout, 4, 2))),
    g.initializer("beta", hostTensor("float32", [cout], random(cout, 5))),
    g.initializer("mean", hostTensor("float32", [cout], random(cout, 6))),
    g.initializer("var", hostTensor("float32", [cout], Float32Array.from(random(cout, 7), (v) => 0.5 + Math.abs(v)))),
  ];
  g.output(g.op("BatchNormalization", [conv, ...bnInputs], { epsilon: float(1e-3) }, { name: "y" }));
  return encodeModel(g.build());
}

describe("GraphBuilder", () => {
  it("gives values unique names, shares identical small constants and types attributes", () => {
    const g = new GraphBuilder({ name: "t" });
    const x = g.input("x", "float32", [2]);
    const a = g.scalar(1);
    const b = g.scalar(1);
    expect(a.name).toBe(b.name);
    const y1 = g.op("Add", [x, a]);
    const y2 = g.op("Add", [y1, a]);
    expect(y1.name).not.toBe(y2.name);
    expect(g.op("Greater", [x, a]).dtype).toBe("bool");
    expect(g.op("Where", [g.op("Greater", [x, a]), x, a]).dtype).toBe("float32");
    expect(() => g.input("x", "float32", [1])).toThrow(/duplicate value name x/);
    const model = g.build();
    expect(model.graph?.initializer).toHaveLength(1);
    expect(() => new GraphBuilder({ name: "old", opset: 13 })).toThrow(/opset 13/);
  });

  it("outputs a value that other nodes read by renaming it everywhere, without an Identity", async () => {
    const g = new GraphBuilder({ name: "rename" });
    const x = g.input("x", "float32", [3]);
    const doubled = g.op("Mul", [x, g.scalar(2)]);
    const plusOne = g.op("Add", [doubled, g.scalar(1)]);
    g.output(doubled, "doubled", { renameProducer: true });
    g.output(plusOne, "y");
    const model = g.build();
    expect(model.graph?.node.map((node) => node.opType)).toEqual(["Mul", "Add", "Identity"]);
    expect(model.graph?.node[1]?.input).toContain("doubled");
    const session = await ort.InferenceSession.create(encodeModel(model));
    try {
      const out = await session.run({ x: new ort.Tensor("float32", Float32Array.of(1, 2, 3), [3]) });
      expect(Array.from(out["doubled"]?.data as Float32Array)).toEqual([2, 4, 6]);
      expect(Array.from(out["y"]?.data as Float32Array)).toEqual([3, 5, 7]);
    } finally {
      await session.release();
    }
  });

  it("imports the operator set of every domain its nodes use, at version 1 unless extraOpsets says otherwise", () => {
    const g = new GraphBuilder({ name: "domains", extraOpsets: { "com.microsoft": 1 } });
    const x = g.input("x", "float32", [1, 16, 2, 2]);
    const blocked = g.op("ReorderInput", [x], {}, { domain: "com.microsoft.nchwc" });
    g.output(g.op("ReorderOutput", [blocked], { channels: { i: 16 } }, { domain: "com.microsoft.nchwc" }), "y");
    const imports = g.build().opsetImport.map((opset) => [opset.domain, Number(opset.version)]);
    expect(imports).toEqual([["", 17], ["com.microsoft", 1], ["com.microsoft.nchwc", 1]]);
  });

  it("round-trips tensors through TensorProto raw data, int64 included", () => {
    const t = hostTensor("int64", [3], [1n, -2n, 9223372036854775807n]);
    expect(fromTensorProto(toTensorProto("t", t)).data).toEqual(t.data);
  });

  it("refuses bytes that are not an ONNX model", () => {
    expect(() => decodeModel(new TextEncoder().encode("not a model at all"))).toThrow(AppError);
    try {
      decodeModel(Uint8Array.from([0x0a, 0x02, 0x08, 0x01]));
    } catch (error) {
      expect(AppError.is(error, Code.INVALID_ARGUMENT)).toBe(true);
    }
  });
});

describe("foldBatchNorms", () => {
  it.each([
    ["Conv", 1, true],
    ["Conv", 2, false],
    ["ConvTranspose", 1, false],
    ["ConvTranspose", 2, true],
  ] as const)("folds %s (groups %d, bias %s) into identical outputs", async (kind, group, bias) => {
    const bytes = convBn(kind, group, bias);
    const { model, folded } = foldBatchNorms(decodeModel(bytes));
    expect(folded).toBe(1);
    expect(model.graph?.node.map((node) => node.opType)).toEqual([kind]);
    const input = random(2 * 4 * 6 * 5, 9, 3);
    const [before, after] = await Promise.all([run(bytes, input, [2, 4, 6, 5]), run(encodeModel(model), input, [2, 4, 6, 5])]);
    let worst = 0;
    for (let i = 0; i < before.length; i++) worst = Math.max(worst, Math.abs((before[i] as number) - (after[i] as number)));
    expect(worst).toBeLessThan(1e-5);
  });
});

describe("inspectModel", () => {
  it("summarizes ops, parameters, inputs and outputs", () => {
    const summary = inspectModel(decodeModel(convBn("Conv", 1, true)));
    expect(summary.ops).toEqual({ Conv: 1, BatchNormalization: 1 });
    expect(summary.parameterCount).toBe(6 * 4 * 9 + 6 + 4 * 6);
    expect(summary.inputs).toEqual([{ name: "x", elemType: 1, shape: ["n", 4, 6, 5] }]);
    expect(summary.opsets).toEqual({ "ai.onnx": 17 });
  });
});
