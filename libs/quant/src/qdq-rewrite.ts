import { clone, create } from "@bufbuild/protobuf";
import { fromTensorProto, intAttr, toTensorProto, type HostTensor } from "@poseloop/onnx";
import {
  AttributeProto_AttributeType,
  AttributeProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  type ModelProto,
  type NodeProto,
  type TensorProto,
} from "@poseloop/proto/onnx/onnx_pb";
import { AppError, Code } from "@poseloop/core";
import type { TensorRange } from "./calibration.js";
import { ABSORBED_OPS, COMPUTE_OPS, indexGraph, nodeLabel, OWN_SCALE_OPS, SAME_SCALE_OPS, type GraphIndex } from "./graph-analysis.js";
import { activationParams, quantizeBias, quantizeWeights, symmetricChannelScales, type ActivationType, type QuantParams } from "./quant-params.js";

/** Which nodes become int8 and which activation tensors get a Q/DQ pair. */
export interface QuantizationPlan {
  readonly index: GraphIndex;
  /** Nodes that run in int8, by node identity. */
  readonly quantizedNodes: ReadonlySet<NodeProto>;
  /** Activation tensors to quantize, in graph order (calibration computes their ranges). */
  readonly tensors: readonly string[];
  /** For same-scale ops: output tensor → input tensor whose parameters it reuses. */
  readonly sameScaleAs: ReadonlyMap<string, string>;
  /** Nodes kept in fp32 on request. */
  readonly keptFp32: readonly string[];
}

/** A quantized compute node, for the report. */
export interface QuantizedLayer {
  readonly node: string;
  readonly op: string;
  readonly input: string;
  readonly inputScale: number;
  readonly output: string;
  readonly outputScale: number;
  readonly weightScaleMin: number;
  readonly weightScaleMax: number;
  readonly channels: number;
}

function dataInputs(node: NodeProto, index: GraphIndex): string[] {
  if (COMPUTE_OPS.has(node.opType)) return [node.input[0] as string];
  if (SAME_SCALE_OPS.has(node.opType)) return [node.input[0] as string];
  return node.input.filter((name) => name !== "" && !index.initializers.has(name));
}

function weightName(node: NodeProto): string | undefined {
  return node.input[1];
}

/**
 * Decides what to quantize: every Conv, ConvTranspose, Gemm and MatMul whose weights are initializers, and the
 * elementwise, pooling and shape ops between them, except nodes named in `keepFp32` (node names or output
 * names). Each quantized node's data inputs and output are quantized; an output read only by a ReLU/Clip is
 * quantized after the activation instead, which onnxruntime then drops.
 */
export function planQuantization(model: ModelProto, keepFp32: readonly string[] = []): QuantizationPlan {
  const index = indexGraph(model);
  const keep = new Set(keepFp32);
  const kept: string[] = [];
  const quantizedNodes = new Set<NodeProto>();
  // Activations: what flows from the graph inputs. Nodes computing on constants only (shape arithmetic for
  // Resize, ...) stay float.
  const activations = new Set(index.graphInputs);
  for (const node of index.nodes) if (node.input.some((input) => activations.has(input))) for (const o of node.output) activations.add(o);
  for (const node of index.nodes) {
    if (!dataInputs(node, index).every((input) => activations.has(input)) || dataInputs(node, index).length === 0) continue;
    const requested = keep.has(node.name) || node.output.some((o) => keep.has(o));
    if (requested) {
      kept.push(nodeLabel(node));
      continue;
    }
    if (COMPUTE_OPS.has(node.opType)) {
      const weight = weightName(node);
      if (weight !== undefined && index.initializers.has(weight) && (node.input[2] === undefined || node.input[2] === "" || index.initializers.has(node.input[2]))) {
        quantizedNodes.add(node);
      }
    } else if (OWN_SCALE_OPS.has(node.opType) || SAME_SCALE_OPS.has(node.opType)) {
      quantizedNodes.add(node);
    }
  }
  for (const name of keep) {
    if (!index.nodes.some((node) => node.name === name || node.output.includes(name))) {
      throw new AppError(Code.INVALID_ARGUMENT, `no node named ${name} to keep in fp32`);
    }
  }
  const tensors = new Set<string>();
  const sameScaleAs = new Map<string, string>();
  for (const node of index.nodes) {
    if (!quantizedNodes.has(node)) continue;
    for (const input of dataInputs(node, index)) tensors.add(input);
    let output = node.output[0] as string;
    const readers = index.consumers.get(output) ?? [];
    const only = readers.length === 1 ? readers[0] : undefined;
    if (only !== undefined && ABSORBED_OPS.has(only.opType) && !index.graphOutputs.has(output) && !SAME_SCALE_OPS.has(node.opType)) {
      output = only.output[0] as string;
    }
    tensors.add(output);
    if (SAME_SCALE_OPS.has(node.opType)) sameScaleAs.set(output, node.input[0] as string);
  }
  const order = [...index.graphInputs, ...index.nodes.flatMap((node) => node.output)];
  return { index, quantizedNodes, tensors: order.filter((name) => tensors.has(name)), sameScaleAs, keptFp32: kept };
}

/** Activation parameters of every planned tensor from the calibrated ranges (same-scale outputs inherit). */
export function activationParameters(plan: QuantizationPlan, ranges: ReadonlyMap<string, TensorRange>, type: ActivationType): Map<string, QuantParams> {
  const params = new Map<string, QuantParams>();
  for (const name of plan.tensors) {
    let source = name;
    for (let depth = 0; depth < 64 && plan.sameScaleAs.has(source); depth++) source = plan.sameScaleAs.get(source) as string;
    const range = ranges.get(source);
    if (range === undefined) throw new AppError(Code.INTERNAL, `no calibration range for ${source}`);
    params.set(name, activationParams(range.low, range.high, type));
  }
  return params;
}

/**
 * Rewrites the float model into QDQ form: a QuantizeLinear after each planned tensor and a dedicated
 * DequantizeLinear in front of each of its readers (onnxruntime only fuses a DQ with a single reader), int8
 * per-channel weights and int32 biases behind DequantizeLinear, graph outputs kept float.
 * The file is kept lean, since graph structure is a visible share of a small model's int8 file (the lite model's
 * 150 KB held 18.8 KB of it): the inserted Q/DQ nodes carry no names (optional in ONNX; their outputs name
 * them), and the symmetric int8 weights of Conv carry no zero points (optional, 0 by default).
 */
export function rewriteQdq(
  model: ModelProto,
  plan: QuantizationPlan,
  params: ReadonlyMap<string, QuantParams>,
  type: ActivationType,
  /** Int8 weights lie in [−weightRange, weightRange] (FULL_WEIGHT_RANGE or REDUCED_WEIGHT_RANGE). */
  weightRange: number,
): { model: ModelProto; layers: QuantizedLayer[] } {
  const out = clone(ModelProtoSchema, model);
  const graph = out.graph;
  if (graph === undefined) throw new AppError(Code.INVALID_ARGUMENT, "the model has no graph");
  const { index } = plan;
  const planned = new Set(plan.tensors);
  const nodes: NodeProto[] = [];
  const initializers: TensorProto[] = graph.initializer.filter((t) => !isQuantizedWeight(t.name, plan));
  const layers: QuantizedLayer[] = [];
  const scaleOf = (tensor: string): QuantParams => params.get(tensor) as QuantParams;
  const addInit = (tensor: TensorProto): string => {
    initializers.push(tensor);
    return tensor.name;
  };
  const qParams = (tensor: string): [string, string] => {
    const p = scaleOf(tensor);
    const scale = addInit(toTensorProto(`${tensor}/scale`, { dtype: "float32", dims: [], data: Float32Array.of(p.scale) }));
    const zero = addInit(
      toTensorProto(`${tensor}/zero_point`, type === "uint8" ? { dtype: "uint8", dims: [], data: Uint8Array.of(p.zeroPoint) } : { dtype: "int8", dims: [], data: Int8Array.of(p.zeroPoint) }),
    );
    return [scale, zero];
  };
  const qNames = new Map<string, { q: string; scale: string; zero: string }>();
  const quantize = (tensor: string, source: string): void => {
    const [scale, zero] = qParams(tensor);
    const q = `${tensor}/quantized`;
    nodes.push(create(NodeProtoSchema, { opType: "QuantizeLinear", input: [source, scale, zero], output: [q] }));
    qNames.set(tensor, { q, scale, zero });
  };
  let dqCount = 0;
  const dequantize = (tensor: string, outputName?: string): string => {
    const q = qNames.get(tensor);
    if (q === undefined) throw new AppError(Code.INTERNAL, `${tensor} is read before it is quantized`);
    const output = outputName ?? `${tensor}/dequantized/${dqCount++}`;
    nodes.push(create(NodeProtoSchema, { opType: "DequantizeLinear", input: [q.q, q.scale, q.zero], output: [output] }));
    return output;
  };
  // A planned tensor that is also a graph output: its producer writes "<name>/float", a DQ restores "<name>".
  const renamed = new Map<string, string>();
  for (const name of planned) if (index.graphOutputs.has(name) && !index.graphInputs.has(name)) renamed.set(name, `${name}/float`);

  for (const input of index.graphInputs) if (planned.has(input)) quantize(input, input);

  for (const original of index.nodes) {
    const node = clone(NodeProtoSchema, original);
    node.input = node.input.map((input) => (planned.has(input) ? dequantize(input) : input));
    if (plan.quantizedNodes.has(original) && COMPUTE_OPS.has(original.opType)) {
      const layer = quantizeWeightsOf(original, node, scaleOf(original.input[0] as string), plan, addInit, nodes, weightRange);
      const output = quantizedOutput(original, plan);
      layers.push({ ...layer, input: original.input[0] as string, inputScale: scaleOf(original.input[0] as string).scale, output, outputScale: planned.has(output) ? scaleOf(output).scale : Number.NaN });
    }
    node.output = node.output.map((o) => renamed.get(o) ?? o);
    nodes.push(node);
    for (const o of original.output) {
      if (!planned.has(o)) continue;
      quantize(o, renamed.get(o) ?? o);
      if (renamed.has(o)) dequantize(o, o);
    }
  }
  graph.node = nodes;
  graph.initializer = initializers;
  return { model: out, layers };
}

function quantizedOutput(node: NodeProto, plan: QuantizationPlan): string {
  const output = node.output[0] as string;
  if (plan.tensors.includes(output)) return output;
  const reader = (plan.index.consumers.get(output) ?? [])[0];
  return reader?.output[0] ?? output;
}

function isQuantizedWeight(name: string, plan: QuantizationPlan): boolean {
  for (const node of plan.quantizedNodes) {
    if (COMPUTE_OPS.has(node.opType) && (node.input[1] === name || node.input[2] === name)) return true;
  }
  return false;
}

/** The output-channel axis of a compute node's weight, where per-channel scales apply. */
function weightAxis(node: NodeProto): number {
  switch (node.opType) {
    case "Conv":
      return 0;
    case "ConvTranspose":
      return 1;
    case "Gemm":
      return intAttr(node, "transB", 0) === 1 ? 0 : 1;
    default:
      return 1; // MatMul: B is [K, N].
  }
}

function quantizeWeightsOf(
  original: NodeProto,
  node: NodeProto,
  input: QuantParams,
  plan: QuantizationPlan,
  addInit: (tensor: TensorProto) => string,
  nodes: NodeProto[],
  weightRange: number,
): Omit<QuantizedLayer, "input" | "inputScale" | "output" | "outputScale"> {
  const label = nodeLabel(original);
  const weightProto = plan.index.initializers.get(original.input[1] as string);
  if (weightProto === undefined) throw new AppError(Code.INTERNAL, `node ${label} has no weight initializer`);
  let weight: HostTensor;
  try {
    weight = fromTensorProto(weightProto);
  } catch (error) {
    throw new AppError(Code.INVALID_ARGUMENT, `cannot quantize node ${label}: its weight ${weightProto.name} is unreadable`, { cause: error });
  }
  if (weight.dtype !== "float32") throw new AppError(Code.INVALID_ARGUMENT, `cannot quantize node ${label}: weight ${weightProto.name} is ${weight.dtype}, not float32`);
  const axis = weightAxis(original);
  if (weight.dims.length <= axis) throw new AppError(Code.INVALID_ARGUMENT, `cannot quantize node ${label}: weight ${weightProto.name} has rank ${weight.dims.length}`);
  const scales = symmetricChannelScales(weight.data as Float32Array, weight.dims, axis, weightRange);
  const q = quantizeWeights(weight.data as Float32Array, weight.dims, axis, scales, weightRange);
  const base = weightProto.name;
  const w = addInit(toTensorProto(`${base}/int8`, { dtype: "int8", dims: weight.dims, data: q }));
  const ws = addInit(toTensorProto(`${base}/scale`, { dtype: "float32", dims: [scales.length], data: Float32Array.from(scales) }));
  // Symmetric weights have zero points of 0, the default: Conv goes without (onnxruntime still fuses it into
  // QLinearConv); onnxruntime's Gemm fusion needs them spelled out (measured: without, the Gemm stays float),
  // so every other op keeps them.
  const weightInputs = [w, ws];
  if (original.opType !== "Conv") weightInputs.push(addInit(toTensorProto(`${base}/zero_point`, { dtype: "int8", dims: [scales.length], data: new Int8Array(scales.length) })));
  const axisAttr = create(AttributeProtoSchema, { name: "axis", type: AttributeProto_AttributeType.INT, i: BigInt(axis) });
  nodes.push(create(NodeProtoSchema, { opType: "DequantizeLinear", input: weightInputs, output: [`${base}/dequantized`], attribute: [axisAttr] }));
  node.input[1] = `${base}/dequantized`;
  const biasName = original.input[2];
  if (biasName !== undefined && biasName !== "" && original.opType !== "MatMul") {
    const biasProto = plan.index.initializers.get(biasName);
    if (biasProto === undefined) throw new AppError(Code.INTERNAL, `node ${label} has no bias initializer`);
    const bias = fromTensorProto(biasProto).data as Float32Array;
    const perChannel = scales.length === bias.length ? scales : Float64Array.from(bias, () => scales[0] as number);
    const { values, scales: biasScales } = quantizeBias(bias, input.scale, perChannel);
    const b = addInit(toTensorProto(`${biasName}/int32`, { dtype: "int32", dims: [bias.length], data: values }));
    const bs = addInit(toTensorProto(`${biasName}/scale`, { dtype: "float32", dims: [bias.length], data: biasScales }));
    // No zero point: it is optional and 0 for int32, and a per-channel int32 tensor of zeros costs 4 bytes per
    // channel, as much as the bias itself.
    const biasAxis = create(AttributeProtoSchema, { name: "axis", type: AttributeProto_AttributeType.INT, i: 0n });
    nodes.push(create(NodeProtoSchema, { opType: "DequantizeLinear", input: [b, bs], output: [`${biasName}/dequantized`], attribute: [biasAxis] }));
    node.input[2] = `${biasName}/dequantized`;
  }
  let min = Number.POSITIVE_INFINITY;
  let max = 0;
  for (const s of scales) {
    min = Math.min(min, s);
    max = Math.max(max, s);
  }
  return { node: label, op: original.opType, weightScaleMin: min, weightScaleMax: max, channels: scales.length };
}
