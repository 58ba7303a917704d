import type { ModelProto, ValueInfoProto } from "@poseloop/proto/onnx/onnx_pb";
import { elementCount } from "./tensor.js";
import type { Dim } from "./graph-builder.js";

export interface ValueSummary {
  readonly name: string;
  /** ONNX element type number (1 = float32, 7 = int64, ...). */
  readonly elemType: number;
  readonly shape: readonly Dim[] | undefined;
}

export interface ModelSummary {
  readonly producer: string;
  readonly irVersion: number;
  readonly opsets: Readonly<Record<string, number>>;
  readonly inputs: readonly ValueSummary[];
  readonly outputs: readonly ValueSummary[];
  /** Node count per op type ("Conv": 20, "com.microsoft.QLinearConv": 3, ...). */
  readonly ops: Readonly<Record<string, number>>;
  readonly nodeCount: number;
  /** Elements in initializers (weights and constants). */
  readonly parameterCount: number;
  readonly initializerBytes: number;
}

/** What a model is made of: opsets, inputs and outputs with shapes, an op histogram, parameter count. */
export function inspectModel(model: ModelProto): ModelSummary {
  const graph = model.graph;
  const ops: Record<string, number> = {};
  for (const node of graph?.node ?? []) {
    const key = node.domain === "" || node.domain === "ai.onnx" ? node.opType : `${node.domain}.${node.opType}`;
    ops[key] = (ops[key] ?? 0) + 1;
  }
  const initializerNames = new Set(graph?.initializer.map((t) => t.name));
  let parameterCount = 0;
  let initializerBytes = 0;
  for (const tensor of graph?.initializer ?? []) {
    parameterCount += elementCount(tensor.dims.map(Number));
    initializerBytes += tensor.rawData.byteLength || tensor.floatData.length * 4 || tensor.int64Data.length * 8 || tensor.int32Data.length * 4;
  }
  return {
    producer: model.producerName,
    irVersion: Number(model.irVersion),
    opsets: Object.fromEntries(model.opsetImport.map((opset) => [opset.domain === "" ? "ai.onnx" : opset.domain, Number(opset.version)])),
    inputs: (graph?.input ?? []).filter((value) => !initializerNames.has(value.name)).map(summarize),
    outputs: (graph?.output ?? []).map(summarize),
    ops,
    nodeCount: graph?.node.length ?? 0,
    parameterCount,
    initializerBytes,
  };
}

function summarize(value: ValueInfoProto): ValueSummary {
  const type = value.type?.value;
  if (type?.case !== "tensorType") return { name: value.name, elemType: 0, shape: undefined };
  return {
    name: value.name,
    elemType: type.value.elemType,
    shape: type.value.shape?.dim.map((dim) => (dim.value.case === "dimValue" ? Number(dim.value.value) : (dim.value.value ?? "?"))),
  };
}
