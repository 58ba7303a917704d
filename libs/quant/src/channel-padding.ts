import { clone, create } from "@bufbuild/protobuf";
import { fromTensorProto, hostTensor, intAttr, toTensorProto } from "@poseloop/onnx";
import { ModelProtoSchema, NodeProtoSchema, type ModelProto, type NodeProto, type TensorProto } from "@poseloop/proto/onnx/onnx_pb";

/** Input channel counts of 2D convolutions are rounded up to a multiple of this. */
export const CHANNEL_ALIGNMENT = 4;

/**
 * Pads the input channels of 2D convolutions whose channel count is not a multiple of CHANNEL_ALIGNMENT with
 * zero channels (a Pad on the input, zero weights for the new channels): the same function in float, but
 * onnxruntime's int8 convolution is much slower on 3 input channels than on 4. On an AVX512-VNNI EPYC the
 * lite model's first convolution (3 → 16 channels, stride 2, on the whole 256x192 picture) took a third of the
 * int8 model's time; padded to 4 channels the whole int8 model ran 12-13% faster at batch 1 and 8 (8 or 16
 * channels: no faster, or slower). Only group-1 convolutions of a graph input with initializer weights of at most
 * 16 input channels, each read by that convolution alone, are padded: that is the RGB (or grey) stem. (Inside
 * the network the Pad would sit in float between int8 ops.)
 */
export function padConvInputChannels(model: ModelProto): { model: ModelProto; padded: number } {
  const out = clone(ModelProtoSchema, model);
  const graph = out.graph;
  if (graph === undefined) return { model: out, padded: 0 };
  const initializers = new Map(graph.initializer.map((t) => [t.name, t]));
  const names = new Set([...graph.node.flatMap((n) => [...n.input, ...n.output, n.name]), ...graph.input.map((v) => v.name), ...initializers.keys()]);
  const unique = (prefix: string) => {
    let name = prefix;
    for (let n = 1; names.has(name); n++) name = `${prefix}_${n}`;
    names.add(name);
    return name;
  };
  const graphInputs = new Set(graph.input.map((v) => v.name));
  const uses = new Map<string, number>();
  for (const name of graph.node.flatMap((n) => n.input)) uses.set(name, (uses.get(name) ?? 0) + 1);
  const nodes: NodeProto[] = [];
  const added: TensorProto[] = [];
  /** One padded copy per (tensor, channel count), shared by every convolution reading it. */
  const paddedInputs = new Map<string, string>();
  let padded = 0;
  for (const node of graph.node) {
    const weight = node.opType === "Conv" && node.domain === "" && intAttr(node, "group", 1) === 1 ? initializers.get(node.input[1] ?? "") : undefined;
    const dims = weight?.dims.map(Number);
    const channels = dims?.[1];
    if (weight === undefined || dims === undefined || channels === undefined || dims.length !== 4 || channels % CHANNEL_ALIGNMENT === 0 || channels > 16 || weight.dataType !== 1 || uses.get(weight.name) !== 1 || !graphInputs.has(node.input[0] ?? "")) {
      nodes.push(node);
      continue;
    }
    const wanted = Math.ceil(channels / CHANNEL_ALIGNMENT) * CHANNEL_ALIGNMENT;
    const source = node.input[0] ?? "";
    const key = `${source}\u0000${wanted}`;
    let input = paddedInputs.get(key);
    if (input === undefined) {
      input = unique(`${source}/channels${wanted}`);
      const pads = unique(`${input}/pads`);
      added.push(toTensorProto(pads, hostTensor("int64", [8], [0n, 0n, 0n, 0n, 0n, BigInt(wanted - channels), 0n, 0n])));
      nodes.push(create(NodeProtoSchema, { opType: "Pad", domain: "", name: unique(`${node.name || source}/pad_channels`), input: [source, pads], output: [input] }));
      paddedInputs.set(key, input);
    }
    const values = fromTensorProto(weight).data as Float32Array;
    const [outChannels = 0, , kh = 0, kw = 0] = dims;
    const taps = kh * kw;
    const widened = new Float32Array(outChannels * wanted * taps);
    for (let o = 0; o < outChannels; o++) widened.set(values.subarray(o * channels * taps, (o + 1) * channels * taps), o * wanted * taps);
    initializers.set(weight.name, toTensorProto(weight.name, hostTensor("float32", [outChannels, wanted, kh, kw], widened)));
    node.input[0] = input;
    nodes.push(node);
    padded++;
  }
  if (padded === 0) return { model: out, padded: 0 };
  graph.node = nodes;
  graph.initializer = [...graph.initializer.map((t) => initializers.get(t.name) ?? t), ...added];
  return { model: out, padded };
}
