import * as ort from "onnxruntime-node";
import { clone, create } from "@bufbuild/protobuf";
import { encodeModel, valueInfo } from "@poseloop/onnx";
import { ModelProtoSchema, NodeProtoSchema, type ModelProto } from "@poseloop/proto/onnx/onnx_pb";
import type { CalibrationFeeds } from "./calibration.js";
import type { QuantizedLayer } from "./qdq-rewrite.js";

export interface LayerReport extends QuantizedLayer {
  /** Signal-to-quantization-noise ratio of the layer's output, int8 against fp32, in dB (higher is better). */
  readonly sqnrDb: number;
}

/**
 * SQNR of every quantized layer's output: both models run on the feeds with the layer outputs exposed (the
 * int8 model's dequantized values), and 10·log10(Σx² / Σ(x − x̂)²) is taken per layer.
 */
export async function layerSqnr(
  fp32: ModelProto,
  int8: ModelProto,
  layers: readonly QuantizedLayer[],
  feeds: CalibrationFeeds,
): Promise<LayerReport[]> {
  const floatNames = layers.map((layer) => layer.output);
  const exposedFloat = expose(fp32, floatNames);
  const int8Names = layers.map((layer) => `${layer.output}/dequantized/report`);
  const exposedInt8 = exposeDequantized(int8, layers.map((layer) => layer.output));
  const [a, b] = await Promise.all([ort.InferenceSession.create(encodeModel(exposedFloat)), ort.InferenceSession.create(encodeModel(exposedInt8))]);
  try {
    const signal = new Float64Array(layers.length);
    const noise = new Float64Array(layers.length);
    for (const feed of feeds) {
      const [x, y] = await Promise.all([a.run(feed, floatNames), b.run(feed, int8Names)]);
      layers.forEach((layer, i) => {
        const reference = x[layer.output]?.data as Float32Array | undefined;
        const approx = y[int8Names[i] as string]?.data as Float32Array | undefined;
        if (reference === undefined || approx === undefined) return;
        for (let j = 0; j < reference.length; j++) {
          const r = reference[j] as number;
          const d = r - (approx[j] as number);
          signal[i] = (signal[i] as number) + r * r;
          noise[i] = (noise[i] as number) + d * d;
        }
      });
    }
    return layers.map((layer, i) => ({
      ...layer,
      sqnrDb: (noise[i] as number) === 0 ? Number.POSITIVE_INFINITY : 10 * Math.log10((signal[i] as number) / (noise[i] as number)),
    }));
  } finally {
    await Promise.all([a.release(), b.release()]);
  }
}

function expose(model: ModelProto, names: readonly string[]): ModelProto {
  const out = clone(ModelProtoSchema, model);
  const existing = new Set(out.graph?.output.map((o) => o.name));
  for (const name of names) if (!existing.has(name)) out.graph?.output.push(valueInfo(name, "float32", undefined));
  return out;
}

/** Adds a DequantizeLinear of each tensor's quantized value as an extra output (does not disturb the others). */
function exposeDequantized(model: ModelProto, tensors: readonly string[]): ModelProto {
  const out = clone(ModelProtoSchema, model);
  const graph = out.graph;
  if (graph === undefined) return out;
  for (const tensor of tensors) {
    const q = graph.node.find((node) => node.opType === "QuantizeLinear" && node.output[0] === `${tensor}/quantized`);
    if (q === undefined) continue;
    const output = `${tensor}/dequantized/report`;
    graph.node.push(create(NodeProtoSchema, { opType: "DequantizeLinear", name: `${output}/node`, input: [q.output[0] as string, q.input[1] as string, q.input[2] as string], output: [output] }));
    graph.output.push(valueInfo(output, "float32", undefined));
  }
  return out;
}
