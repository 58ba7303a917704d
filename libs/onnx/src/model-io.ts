import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { ModelProtoSchema, type ModelProto } from "@poseloop/proto/onnx/onnx_pb";
import { AppError, Code } from "@poseloop/core";

/** Parses an .onnx file; anything that is not an ONNX model is INVALID_ARGUMENT. */
export function decodeModel(bytes: Uint8Array): ModelProto {
  let model: ModelProto;
  try {
    model = fromBinary(ModelProtoSchema, bytes);
  } catch (error) {
    throw new AppError(Code.INVALID_ARGUMENT, "not an ONNX model: the bytes do not parse as onnx.ModelProto", { cause: error });
  }
  if (model.graph === undefined || model.irVersion === 0n || model.opsetImport.length === 0) {
    throw new AppError(Code.INVALID_ARGUMENT, "not an ONNX model: no graph, IR version or opset");
  }
  return model;
}

export function encodeModel(model: ModelProto): Uint8Array {
  return toBinary(ModelProtoSchema, model);
}
