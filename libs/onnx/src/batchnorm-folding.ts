import { clone } from "@bufbuild/protobuf";
import { ModelProtoSchema, type ModelProto, type NodeProto, type TensorProto } from "@poseloop/proto/onnx/onnx_pb";
import { floatAttr, intAttr } from "./attributes.js";
import { fromTensorProto, toTensorProto, type HostTensor } from "./tensor.js";

/**
 * Folds every inference-mode BatchNormalization that directly follows a Conv or ConvTranspose (whose output
 * feeds nothing else) into that convolution's weights and bias:
 *   W' = W · γ/√(σ²+ε) per output channel,   b' = (b − μ) · γ/√(σ²+ε) + β.
 * Returns a new model; the input is not changed. Folding happens in float64 and rounds once to float32.
 */
export function foldBatchNorms(model: ModelProto): { model: ModelProto; folded: number } {
  const out = clone(ModelProtoSchema, model);
  const graph = out.graph;
  if (graph === undefined) return { model: out, folded: 0 };
  const initializers = new Map(graph.initializer.map((tensor) => [tensor.name, tensor]));
  const producers = new Map<string, NodeProto>();
  const consumers = new Map<string, number>();
  for (const node of graph.node) {
    for (const output of node.output) producers.set(output, node);
    for (const input of node.input) consumers.set(input, (consumers.get(input) ?? 0) + 1);
  }
  const graphOutputs = new Set(graph.output.map((value) => value.name));
  const removed = new Set<NodeProto>();
  const replaced = new Map<string, TensorProto>();
  let folded = 0;

  for (const bn of graph.node) {
    if (bn.opType !== "BatchNormalization" || bn.output.length !== 1 || intAttr(bn, "training_mode", 0) !== 0) continue;
    const [x, scaleName, biasName, meanName, varName] = bn.input;
    const conv = x === undefined ? undefined : producers.get(x);
    if (conv === undefined || (conv.opType !== "Conv" && conv.opType !== "ConvTranspose")) continue;
    if (consumers.get(x ?? "") !== 1 || graphOutputs.has(x ?? "")) continue;
    const tensors = [scaleName, biasName, meanName, varName, conv.input[1]].map((name) => (name === undefined ? undefined : initializers.get(name)));
    if (tensors.some((t) => t === undefined)) continue;
    const [scale, shift, mean, variance, weightProto] = tensors.map((t) => fromTensorProto(t as TensorProto));
    const biasProto = conv.input[2] === undefined || conv.input[2] === "" ? undefined : initializers.get(conv.input[2]);
    if (conv.input[2] !== undefined && conv.input[2] !== "" && biasProto === undefined) continue;
    const weight = weightProto as HostTensor;
    if (weight.dtype !== "float32") continue;
    const epsilon = floatAttr(bn, "epsilon", 1e-5);
    const group = intAttr(conv, "group", 1);
    const outChannels = (scale as HostTensor).data.length;
    const factor = new Float64Array(outChannels);
    for (let c = 0; c < outChannels; c++) {
      factor[c] = Number((scale as HostTensor).data[c]) / Math.sqrt(Number((variance as HostTensor).data[c]) + epsilon);
    }
    const w = Float32Array.from(weight.data as Float32Array);
    const [d0 = 0, d1 = 0] = weight.dims;
    const inner = w.length / (d0 * d1);
    if (conv.opType === "Conv") {
      // W: [Cout, Cin/g, k...]: output channel = first dimension.
      for (let o = 0; o < d0; o++) for (let i = 0; i < d1 * inner; i++) w[o * d1 * inner + i] = (w[o * d1 * inner + i] as number) * (factor[o] as number);
    } else {
      // W: [Cin, Cout/g, k...]: output channel of (ci, j) = group(ci) · Cout/g + j.
      const cinPerGroup = d0 / group;
      for (let ci = 0; ci < d0; ci++) {
        const g = Math.floor(ci / cinPerGroup);
        for (let j = 0; j < d1; j++) {
          const o = g * d1 + j;
          for (let i = 0; i < inner; i++) {
            const index = (ci * d1 + j) * inner + i;
            w[index] = (w[index] as number) * (factor[o] as number);
          }
        }
      }
    }
    const b = new Float32Array(outChannels);
    const oldBias = biasProto === undefined ? undefined : fromTensorProto(biasProto).data;
    for (let c = 0; c < outChannels; c++) {
      const bias = oldBias === undefined ? 0 : Number(oldBias[c]);
      b[c] = (bias - Number((mean as HostTensor).data[c])) * (factor[c] as number) + Number((shift as HostTensor).data[c]);
    }
    const weightName = conv.input[1] as string;
    const biasName2 = biasProto?.name ?? `${weightName}_folded_bias`;
    replaced.set(weightName, toTensorProto(weightName, { dtype: "float32", dims: weight.dims, data: w }));
    replaced.set(biasName2, toTensorProto(biasName2, { dtype: "float32", dims: [outChannels], data: b }));
    conv.input[2] = biasName2;
    conv.output[0] = bn.output[0] as string;
    removed.add(bn);
    folded++;
  }
  graph.node = graph.node.filter((node) => !removed.has(node));
  const used = new Set(graph.node.flatMap((node) => node.input));
  graph.initializer = [
    ...graph.initializer.filter((t) => used.has(t.name)).map((t) => replaced.get(t.name) ?? t),
    ...[...replaced.values()].filter((t) => !initializers.has(t.name)),
  ];
  return { model: out, folded };
}
