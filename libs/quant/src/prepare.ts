import { clone } from "@bufbuild/protobuf";
import { foldBatchNorms, tensorAttr, toTensorProto } from "@poseloop/onnx";
import { ModelProtoSchema, type ModelProto } from "@poseloop/proto/onnx/onnx_pb";
import { padConvInputChannels } from "./channel-padding.js";
import { decomposeConvTransposes } from "./convtranspose-decomposition.js";

/**
 * Prepares a float model for quantization: Constant nodes become initializers (so weights hidden behind
 * Constant, as PyTorch exports them, are seen as weights), BatchNormalization is folded into the convolutions
 * before it (so the folded weights are what gets quantized), and stride-s transposed convolutions become a
 * Conv + DepthToSpace (int8-capable on the CPU provider), and the stem's 3 input channels become 4 (see
 * padConvInputChannels). Every step keeps the float outputs.
 */
export function prepareForQuantization(model: ModelProto): {
  model: ModelProto;
  foldedBatchNorms: number;
  foldedConstants: number;
  decomposedConvTransposes: number;
  paddedConvInputs: number;
} {
  const out = clone(ModelProtoSchema, model);
  const graph = out.graph;
  let foldedConstants = 0;
  if (graph !== undefined) {
    const kept = [];
    for (const node of graph.node) {
      const value = node.opType === "Constant" && (node.domain === "" || node.domain === "ai.onnx") ? tensorAttr(node, "value") : undefined;
      if (value !== undefined && node.output[0] !== undefined) {
        graph.initializer.push(toTensorProto(node.output[0], value));
        foldedConstants++;
      } else {
        kept.push(node);
      }
    }
    graph.node = kept;
  }
  const folded = foldBatchNorms(out);
  const decomposed = decomposeConvTransposes(folded.model);
  const padded = padConvInputChannels(decomposed.model);
  return { model: padded.model, foldedBatchNorms: folded.folded, foldedConstants, decomposedConvTransposes: decomposed.decomposed, paddedConvInputs: padded.padded };
}
