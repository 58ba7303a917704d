import type { ModelProto, NodeProto, TensorProto } from "@poseloop/proto/onnx/onnx_pb";
import { AppError, Code } from "@poseloop/core";

/** Ops with weights that become int8 kernels (QLinearConv, QGemm, ...). */
export const COMPUTE_OPS = new Set(["Conv", "ConvTranspose", "Gemm", "MatMul"]);
/** Ops onnxruntime runs in int8 with their own output scale (QLinearAdd, QLinearConcat, ...). */
export const OWN_SCALE_OPS = new Set(["Add", "Mul", "Concat", "GlobalAveragePool", "AveragePool", "Sigmoid", "LeakyRelu"]);
/** Ops that move int8 values without changing them: output scale = input scale. */
export const SAME_SCALE_OPS = new Set(["MaxPool", "Resize", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice", "DepthToSpace"]);
/** Activations folded into the preceding op by the output quantization (ReLU is free when zero point = qmin). */
export const ABSORBED_OPS = new Set(["Relu", "Clip"]);

const UNSUPPORTED_OPS = new Set(["If", "Loop", "Scan", "QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"]);

/** Who produces and who consumes each tensor of a graph. */
export interface GraphIndex {
  readonly nodes: readonly NodeProto[];
  readonly producer: ReadonlyMap<string, NodeProto>;
  readonly consumers: ReadonlyMap<string, readonly NodeProto[]>;
  readonly initializers: ReadonlyMap<string, TensorProto>;
  readonly graphInputs: ReadonlySet<string>;
  readonly graphOutputs: ReadonlySet<string>;
}

/** A node's name for messages: its name, else its first output. */
export function nodeLabel(node: NodeProto): string {
  return node.name !== "" ? node.name : `${node.opType} → ${node.output[0] ?? "?"}`;
}

/**
 * Indexes a float model for quantization, refusing what cannot be quantized with a message naming the node:
 * control flow, ops of other domains, already-quantized graphs, nodes out of topological order.
 */
export function indexGraph(model: ModelProto): GraphIndex {
  const graph = model.graph;
  if (graph === undefined || graph.node.length === 0) throw new AppError(Code.INVALID_ARGUMENT, "the model has no nodes to quantize");
  const initializers = new Map(graph.initializer.map((t) => [t.name, t]));
  const graphInputs = new Set(graph.input.map((v) => v.name).filter((name) => !initializers.has(name)));
  const available = new Set([...graphInputs, ...initializers.keys(), ""]);
  const producer = new Map<string, NodeProto>();
  const consumers = new Map<string, NodeProto[]>();
  for (const node of graph.node) {
    if (node.domain !== "" && node.domain !== "ai.onnx") {
      throw new AppError(Code.INVALID_ARGUMENT, `cannot quantize node ${nodeLabel(node)}: op ${node.domain}.${node.opType} is outside the ONNX standard domain`);
    }
    if (UNSUPPORTED_OPS.has(node.opType)) {
      throw new AppError(Code.INVALID_ARGUMENT, `cannot quantize node ${nodeLabel(node)}: ${node.opType} is not supported (control flow, or the model is already quantized)`);
    }
    for (const input of node.input) {
      if (!available.has(input)) {
        throw new AppError(Code.INVALID_ARGUMENT, `malformed model: node ${nodeLabel(node)} reads ${input}, which no earlier node, input or initializer provides`);
      }
      const list = consumers.get(input) ?? [];
      list.push(node);
      consumers.set(input, list);
    }
    for (const output of node.output) {
      if (output === "") continue;
      producer.set(output, node);
      available.add(output);
    }
  }
  const graphOutputs = new Set(graph.output.map((v) => v.name));
  for (const output of graphOutputs) {
    if (!available.has(output)) throw new AppError(Code.INVALID_ARGUMENT, `malformed model: graph output ${output} is produced by no node`);
  }
  return { nodes: graph.node, producer, consumers, initializers, graphInputs, graphOutputs };
}
