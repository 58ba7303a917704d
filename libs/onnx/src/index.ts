export { floatAttr, intAttr, intsAttr, stringAttr, tensorAttr } from "./attributes.js";
export { foldBatchNorms } from "./batchnorm-folding.js";
export { float, floats, GraphBuilder, int, ints, str, valueInfo } from "./graph-builder.js";
export type { Attr, Attrs, Dim, GraphBuilderOptions, Value } from "./graph-builder.js";
export { inspectModel } from "./inspect.js";
export type { ModelSummary, ValueSummary } from "./inspect.js";
export { decodeModel, encodeModel } from "./model-io.js";
export { allocate, DType, dtypeOf, elementCount, fromTensorProto, hostTensor, toTensorProto } from "./tensor.js";
export type { HostTensor, TensorData } from "./tensor.js";
