import { create } from "@bufbuild/protobuf";
import { TensorProto_DataLocation, TensorProto_DataType, TensorProtoSchema, type TensorProto } from "@poseloop/proto/onnx/onnx_pb";
import { AppError, Code } from "@poseloop/core";

/** Element types PoseLoop's graphs use, by their onnxruntime names. */
export const DType = {
  float32: TensorProto_DataType.FLOAT,
  float16: TensorProto_DataType.FLOAT16,
  float64: TensorProto_DataType.DOUBLE,
  int8: TensorProto_DataType.INT8,
  uint8: TensorProto_DataType.UINT8,
  int32: TensorProto_DataType.INT32,
  int64: TensorProto_DataType.INT64,
  bool: TensorProto_DataType.BOOL,
} as const;
export type DType = keyof typeof DType;

export type TensorData = Float32Array | Float64Array | Int8Array | Uint8Array | Int32Array | BigInt64Array | Uint16Array;

/** A tensor in host memory: element type, dimensions and row-major data. */
export interface HostTensor {
  readonly dtype: DType;
  readonly dims: readonly number[];
  readonly data: TensorData;
}

const BYTES: Readonly<Record<DType, number>> = { float32: 4, float16: 2, float64: 8, int8: 1, uint8: 1, int32: 4, int64: 8, bool: 1 };

export function elementCount(dims: readonly number[]): number {
  return dims.reduce((n, d) => n * d, 1);
}

export function dtypeOf(code: number): DType {
  for (const [name, value] of Object.entries(DType)) if (Number(value) === code) return name as DType;
  throw new AppError(Code.INVALID_ARGUMENT, `unsupported ONNX element type ${code}`);
}

/** A HostTensor of `dtype` with the given dims, from plain numbers (bigints for int64). */
export function hostTensor(dtype: DType, dims: readonly number[], values: ArrayLike<number> | readonly bigint[]): HostTensor {
  const count = elementCount(dims);
  if (values.length !== count) throw new AppError(Code.INVALID_ARGUMENT, `expected ${count} values for dims [${dims.join(", ")}], got ${values.length}`);
  const data = allocate(dtype, count);
  if (data instanceof BigInt64Array) for (let i = 0; i < count; i++) data[i] = BigInt(values[i] as number | bigint);
  else for (let i = 0; i < count; i++) (data as Float32Array)[i] = Number(values[i]);
  return { dtype, dims: [...dims], data };
}

export function allocate(dtype: DType, count: number): TensorData {
  switch (dtype) {
    case "float32":
      return new Float32Array(count);
    case "float16":
      return new Uint16Array(count);
    case "float64":
      return new Float64Array(count);
    case "int8":
      return new Int8Array(count);
    case "uint8":
    case "bool":
      return new Uint8Array(count);
    case "int32":
      return new Int32Array(count);
    case "int64":
      return new BigInt64Array(count);
  }
}

/** A TensorProto holding `tensor` in raw_data (little-endian, as every x86 and ARM host is). */
export function toTensorProto(name: string, tensor: HostTensor): TensorProto {
  const { data } = tensor;
  return create(TensorProtoSchema, {
    name,
    dataType: DType[tensor.dtype],
    dims: tensor.dims.map(BigInt),
    rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
  });
}

/**
 * The tensor a TensorProto holds, from raw_data or the typed fields. External data is refused: PoseLoop's
 * models are self-contained files.
 */
export function fromTensorProto(proto: TensorProto): HostTensor {
  const dtype = dtypeOf(proto.dataType);
  const dims = proto.dims.map(Number);
  const count = elementCount(dims);
  if (proto.dataLocation === TensorProto_DataLocation.EXTERNAL || proto.externalData.length > 0) {
    throw new AppError(Code.INVALID_ARGUMENT, `tensor ${proto.name} keeps its data in an external file, which is not supported`);
  }
  const data = allocate(dtype, count);
  if (proto.rawData.byteLength > 0) {
    if (proto.rawData.byteLength !== count * BYTES[dtype]) {
      throw new AppError(Code.INVALID_ARGUMENT, `tensor ${proto.name} has ${proto.rawData.byteLength} bytes of data, expected ${count * BYTES[dtype]}`);
    }
    new Uint8Array(data.buffer).set(proto.rawData);
    return { dtype, dims, data };
  }
  const typed = typedFieldValues(proto, dtype);
  if (typed.length !== count) throw new AppError(Code.INVALID_ARGUMENT, `tensor ${proto.name} has ${typed.length} values, expected ${count}`);
  if (data instanceof BigInt64Array) for (let i = 0; i < count; i++) data[i] = BigInt(typed[i] as number | bigint);
  else for (let i = 0; i < count; i++) (data as Float32Array)[i] = Number(typed[i]);
  return { dtype, dims, data };
}

function typedFieldValues(proto: TensorProto, dtype: DType): ArrayLike<number | bigint> {
  switch (dtype) {
    case "float32":
      return proto.floatData;
    case "float64":
      return proto.doubleData;
    case "int64":
      return proto.int64Data;
    default:
      // int8, uint8, int32, bool and float16 (as bits) are all carried in int32_data.
      return proto.int32Data;
  }
}
