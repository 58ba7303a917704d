import { create } from "@bufbuild/protobuf";
import {
  AttributeProto_AttributeType,
  AttributeProtoSchema,
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  StringStringEntryProtoSchema,
  TensorShapeProto_DimensionSchema,
  TypeProtoSchema,
  ValueInfoProtoSchema,
  type AttributeProto,
  type ModelProto,
  type NodeProto,
  type TensorProto,
  type ValueInfoProto,
} from "@poseloop/proto/onnx/onnx_pb";
import { AppError, Code } from "@poseloop/core";
import { DType, hostTensor, toTensorProto, type HostTensor } from "./tensor.js";

/** A dimension: a size, or a symbolic name such as "batch". */
export type Dim = number | string;

/** A value in a graph under construction: its name, element type and (when known) shape. */
export interface Value {
  readonly name: string;
  readonly dtype: keyof typeof DType;
  readonly shape: readonly Dim[] | undefined;
}

/** An attribute value, typed as ONNX needs it (JavaScript numbers do not say int or float). */
export type Attr =
  | { readonly i: number | bigint }
  | { readonly f: number }
  | { readonly s: string }
  | { readonly ints: readonly (number | bigint)[] }
  | { readonly floats: readonly number[] }
  | { readonly t: HostTensor };

export type Attrs = Readonly<Record<string, Attr | undefined>>;

export const int = (i: number | bigint): Attr => ({ i });
export const float = (f: number): Attr => ({ f });
export const str = (s: string): Attr => ({ s });
export const ints = (values: readonly (number | bigint)[]): Attr => ({ ints: values });
export const floats = (values: readonly number[]): Attr => ({ floats: values });

export interface GraphBuilderOptions {
  name: string;
  /** Default-domain opset. Default 17. */
  opset?: number;
  /** Extra operator sets, e.g. { "com.microsoft": 1 }. */
  extraOpsets?: Readonly<Record<string, number>>;
  producer?: string;
  docString?: string;
}

/**
 * Builds an ONNX model node by node with unique names: graph inputs, named initializers (weights), deduplicated
 * constants, nodes with typed attributes, and outputs with shapes.
 */
export class GraphBuilder {
  readonly opset: number;
  readonly #options: GraphBuilderOptions;
  readonly #nodes: NodeProto[] = [];
  readonly #inputs: ValueInfoProto[] = [];
  readonly #outputs: ValueInfoProto[] = [];
  readonly #initializers: TensorProto[] = [];
  readonly #names = new Set<string>();
  readonly #counters = new Map<string, number>();
  readonly #constants = new Map<string, Value>();
  readonly #metadata: Record<string, string> = {};
  /** Non-default domains of the nodes emitted (each imported at version 1 unless extraOpsets says otherwise). */
  readonly #domains = new Set<string>();

  constructor(options: GraphBuilderOptions) {
    this.#options = options;
    this.opset = options.opset ?? 17;
    if (this.opset < 17) throw new AppError(Code.INVALID_ARGUMENT, `opset ${this.opset} is below 17, the oldest PoseLoop emits`);
  }

  /** A name not used yet in this graph, from `prefix`. */
  uniqueName(prefix: string): string {
    if (!this.#names.has(prefix)) {
      this.#names.add(prefix);
      return prefix;
    }
    let n = this.#counters.get(prefix) ?? 1;
    while (this.#names.has(`${prefix}_${n}`)) n++;
    this.#counters.set(prefix, n + 1);
    const name = `${prefix}_${n}`;
    this.#names.add(name);
    return name;
  }

  /** Declares a graph input. Its name must be unique. */
  input(name: string, dtype: keyof typeof DType, shape: readonly Dim[]): Value {
    this.#claim(name);
    this.#inputs.push(valueInfo(name, dtype, shape));
    return { name, dtype, shape };
  }

  /** Declares a named initializer (a weight stored in the file). */
  initializer(name: string, tensor: HostTensor): Value {
    this.#claim(name);
    return this.#addInitializer(name, tensor);
  }

  /** A constant tensor (stored as an initializer); identical small constants are shared. */
  constant(tensor: HostTensor, prefix = "const"): Value {
    const small = tensor.data.length <= 16;
    const key = small ? `${tensor.dtype}|${tensor.dims.join(",")}|${Array.from(tensor.data as ArrayLike<number | bigint>, String).join(",")}` : undefined;
    const cached = key === undefined ? undefined : this.#constants.get(key);
    if (cached !== undefined) return cached;
    const value = this.#addInitializer(this.uniqueName(prefix), tensor);
    if (key !== undefined) this.#constants.set(key, value);
    return value;
  }

  /** A scalar constant (shape []). */
  scalar(value: number, dtype: keyof typeof DType = "float32"): Value {
    return this.constant(hostTensor(dtype, [], dtype === "int64" ? [BigInt(value)] : [value]), "scalar");
  }

  /** A 1-D int64 constant (shapes, axes, pads, slice bounds). */
  int64s(values: readonly number[]): Value {
    return this.constant(hostTensor("int64", [values.length], values.map(BigInt)), "ints");
  }

  /**
   * Appends a node. `outputs` gives each output's element type and shape (defaults: one output, the first
   * input's type, unknown shape). An undefined input is an omitted optional input ("").
   */
  node(
    opType: string,
    inputs: readonly (Value | undefined)[],
    attrs: Attrs = {},
    options: { outputs?: readonly { dtype?: keyof typeof DType; shape?: readonly Dim[]; name?: string }[]; name?: string; domain?: string } = {},
  ): Value[] {
    if (options.domain !== undefined && options.domain !== "") this.#domains.add(options.domain);
    const outputsSpec = options.outputs ?? [{}];
    const base = options.name ?? opType.toLowerCase();
    const outputs = outputsSpec.map((spec, i) => {
      const name = spec.name ?? this.uniqueName(outputsSpec.length === 1 ? base : `${base}_out${i}`);
      if (spec.name !== undefined) this.#claim(spec.name);
      return { name, dtype: spec.dtype ?? defaultOutputType(opType, inputs), shape: spec.shape };
    });
    this.#nodes.push(
      create(NodeProtoSchema, {
        opType,
        domain: options.domain ?? "",
        name: this.uniqueName(`n_${base}`),
        input: inputs.map((value) => value?.name ?? ""),
        output: outputs.map((value) => value.name),
        attribute: Object.entries(attrs).flatMap(([name, attr]) => (attr === undefined ? [] : [toAttribute(name, attr)])),
      }),
    );
    return outputs;
  }

  /** A node with one output. */
  op(
    opType: string,
    inputs: readonly (Value | undefined)[],
    attrs: Attrs = {},
    out: { dtype?: keyof typeof DType; shape?: readonly Dim[]; name?: string; domain?: string } = {},
  ): Value {
    const { domain, ...spec } = out;
    const [value] = this.node(opType, inputs, attrs, { outputs: [spec], ...(domain === undefined ? {} : { domain }) });
    return value as Value;
  }

  /**
   * Marks `value` as a graph output, under `name` when given, through an Identity. With `renameProducer` the
   * producing node's output is renamed instead, and so are the inputs of the nodes that read it already (no
   * extra node, and no copy: a training step's Identity per state tensor copied every weight), unless it is
   * already a graph output; the caller must then stop using `value` and use the returned value.
   */
  output(value: Value, name?: string, options: { renameProducer?: boolean } = {}): Value {
    let out = value;
    if (name !== undefined && name !== value.name) {
      const producer = this.#nodes.find((node) => node.output.includes(value.name));
      const isOutput = this.#outputs.some((o) => o.name === value.name);
      if (options.renameProducer === true && producer !== undefined && !isOutput) {
        this.#claim(name);
        producer.output = producer.output.map((o) => (o === value.name ? name : o));
        for (const node of this.#nodes) if (node.input.includes(value.name)) node.input = node.input.map((i) => (i === value.name ? name : i));
        out = { ...value, name };
      } else {
        out = this.op("Identity", [value], {}, { name, dtype: value.dtype, ...(value.shape === undefined ? {} : { shape: value.shape }) });
      }
    }
    this.#outputs.push(valueInfo(out.name, out.dtype, out.shape));
    return out;
  }

  /** Adds model metadata (key/value strings, e.g. the manifest of an inference model). */
  metadata(key: string, value: string): void {
    this.#metadata[key] = value;
  }

  build(): ModelProto {
    const opsets = [create(OperatorSetIdProtoSchema, { domain: "", version: BigInt(this.opset) })];
    for (const [domain, version] of Object.entries(this.#options.extraOpsets ?? {})) {
      opsets.push(create(OperatorSetIdProtoSchema, { domain, version: BigInt(version) }));
    }
    for (const domain of this.#domains) {
      if (this.#options.extraOpsets?.[domain] === undefined) opsets.push(create(OperatorSetIdProtoSchema, { domain, version: 1n }));
    }
    return create(ModelProtoSchema, {
      irVersion: 8n,
      producerName: this.#options.producer ?? "poseloop",
      producerVersion: "0.1.0",
      docString: this.#options.docString ?? "",
      opsetImport: opsets,
      metadataProps: Object.entries(this.#metadata).map(([key, value]) => create(StringStringEntryProtoSchema, { key, value })),
      graph: create(GraphProtoSchema, {
        name: this.#options.name,
        node: this.#nodes,
        initializer: this.#initializers,
        input: this.#inputs,
        output: this.#outputs,
      }),
    });
  }

  #addInitializer(name: string, tensor: HostTensor): Value {
    this.#initializers.push(toTensorProto(name, tensor));
    return { name, dtype: tensor.dtype, shape: tensor.dims };
  }

  #claim(name: string): void {
    if (this.#names.has(name)) throw new AppError(Code.INVALID_ARGUMENT, `duplicate value name ${name}`);
    this.#names.add(name);
  }
}

const BOOLEAN_OPS = new Set(["Greater", "Less", "Equal", "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor", "Not", "IsNaN", "IsInf"]);
const INDEX_OPS = new Set(["Shape", "Size", "ArgMax", "ArgMin", "NonZero"]);

/** The element type of an op's first output when the caller does not say. */
function defaultOutputType(opType: string, inputs: readonly (Value | undefined)[]): keyof typeof DType {
  if (BOOLEAN_OPS.has(opType)) return "bool";
  if (INDEX_OPS.has(opType)) return "int64";
  if (opType === "ConstantOfShape" || opType === "DequantizeLinear") return "float32";
  if (opType === "Where") return inputs[1]?.dtype ?? "float32";
  if (opType === "QuantizeLinear") return inputs[2]?.dtype ?? "uint8";
  return inputs.find((value) => value !== undefined)?.dtype ?? "float32";
}

/** A ValueInfoProto for a tensor of `dtype` and `shape` (undefined: unknown shape). */
export function valueInfo(name: string, dtype: keyof typeof DType, shape: readonly Dim[] | undefined): ValueInfoProto {
  return create(ValueInfoProtoSchema, {
    name,
    type: create(TypeProtoSchema, {
      value: {
        case: "tensorType",
        value: {
          elemType: DType[dtype],
          ...(shape === undefined
            ? {}
            : {
                shape: {
                  dim: shape.map((dim) =>
                    create(TensorShapeProto_DimensionSchema, {
                      value: typeof dim === "number" ? { case: "dimValue", value: BigInt(dim) } : { case: "dimParam", value: dim },
                    }),
                  ),
                },
              }),
        },
      },
    }),
  });
}

function toAttribute(name: string, attr: Attr): AttributeProto {
  if ("i" in attr) return create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.INT, i: BigInt(attr.i) });
  if ("f" in attr) return create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.FLOAT, f: attr.f });
  if ("s" in attr) return create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.STRING, s: new TextEncoder().encode(attr.s) });
  if ("ints" in attr) return create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.INTS, ints: attr.ints.map(BigInt) });
  if ("floats" in attr) return create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.FLOATS, floats: [...attr.floats] });
  return create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.TENSOR, t: toTensorProto("", attr.t) });
}
