import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { create, equals, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import { AttributeProto_AttributeType, ModelProtoSchema, NodeProtoSchema } from "@poseloop/proto/onnx/onnx_pb";

const fixture = readFileSync(fileURLToPath(new URL("../fixtures/tiny-pose.onnx", import.meta.url)));

/** A varint field that no ONNX message defines, as a newer producer might add one. */
function unknownVarintField(fieldNumber: number, value: number): Uint8Array {
  return Uint8Array.from([(fieldNumber << 3) & 0x7f | 0x80, fieldNumber >> 4, value]);
}

async function run(bytes: Uint8Array, input: Float32Array): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(bytes);
  try {
    const outputs = await session.run({ input: new ort.Tensor("float32", input, [2, 3, 64, 48]) });
    return outputs["heatmaps"]?.data as Float32Array;
  } finally {
    await session.release();
  }
}

describe("onnx.proto against a model exported by PyTorch", () => {
  it("decodes the graph, its attributes and its initializers", () => {
    const model = fromBinary(ModelProtoSchema, fixture);
    expect(model.producerName).toBe("pytorch");
    expect(model.opsetImport.find((opset) => opset.domain === "")?.version).toBe(17n);
    const graph = model.graph;
    const ops = new Set(graph?.node.map((node) => node.opType));
    for (const op of ["Conv", "Relu", "ConvTranspose", "Slice"]) expect(ops).toContain(op);
    expect(graph?.input[0]?.name).toBe("input");
    expect(graph?.input[0]?.type?.value.case).toBe("tensorType");
    const dims = graph?.input[0]?.type?.value.case === "tensorType" ? graph.input[0].type.value.value.shape?.dim : [];
    expect(dims?.map((dim) => dim.value.value)).toEqual(["batch", 3n, 64n, 48n]);
    const conv = graph?.node.find((node) => node.opType === "Conv");
    const strides = conv?.attribute.find((attribute) => attribute.name === "strides");
    expect(strides?.type).toBe(AttributeProto_AttributeType.INTS);
    expect(strides?.ints).toEqual([2n, 2n]);
    expect(graph?.initializer.some((tensor) => tensor.rawData.byteLength > 0)).toBe(true);
    // The open-ended slice keeps INT64_MAX exactly: 64-bit integers are bigints, never rounded doubles.
    const int64Max = 9223372036854775807n;
    const constants = graph?.node.filter((node) => node.opType === "Constant").flatMap((node) => node.attribute.map((a) => a.t)) ?? [];
    const values = constants.flatMap((tensor) =>
      tensor === undefined || tensor.dataType !== 7 ? [] : [...new BigInt64Array(new Uint8Array(tensor.rawData).buffer)],
    );
    expect(values).toContain(int64Max);
  });

  it("re-encodes to identical bytes, and keeps unknown fields at the top level and inside nodes", () => {
    const model = fromBinary(ModelProtoSchema, fixture);
    const reencoded = toBinary(ModelProtoSchema, model);
    expect(Buffer.compare(Buffer.from(reencoded), fixture)).toBe(0);
    expect(equals(ModelProtoSchema, fromBinary(ModelProtoSchema, reencoded), model)).toBe(true);

    const withUnknown = Buffer.concat([fixture, unknownVarintField(1000, 42)]);
    const decoded = fromBinary(ModelProtoSchema, withUnknown);
    expect(decoded.$unknown?.map((field) => field.no)).toEqual([1000]);
    expect(Buffer.compare(Buffer.from(toBinary(ModelProtoSchema, decoded)), withUnknown)).toBe(0);

    const node = decoded.graph?.node[0] ?? create(NodeProtoSchema);
    node.$unknown = [{ no: 77, wireType: 0, data: Uint8Array.from([5]) }];
    const nested = fromBinary(ModelProtoSchema, toBinary(ModelProtoSchema, decoded));
    expect(nested.graph?.node[0]?.$unknown).toEqual([{ no: 77, wireType: 0, data: Uint8Array.from([5]) }]);
  });

  it("gives bit-identical onnxruntime outputs for the original and the re-encoded file", async () => {
    const input = new Float32Array(2 * 3 * 64 * 48).map((_, i) => Math.sin(i * 0.37));
    const reencoded = toBinary(ModelProtoSchema, fromBinary(ModelProtoSchema, fixture));
    const [original, roundTripped] = await Promise.all([run(fixture, input), run(reencoded, input)]);
    expect(original.length).toBe(2 * 17 * 32 * 23);
    expect(Buffer.compare(Buffer.from(original.buffer), Buffer.from(roundTripped.buffer))).toBe(0);
  });
});
