import { clone, create } from "@bufbuild/protobuf";
import { fromTensorProto, intAttr, intsAttr, stringAttr, toTensorProto } from "@poseloop/onnx";
import {
  AttributeProto_AttributeType,
  AttributeProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  type ModelProto,
  type NodeProto,
  type TensorProto,
} from "@poseloop/proto/onnx/onnx_pb";

/**
 * Rewrites stride-s ConvTranspose nodes (group 1, weights as initializers) into convolutions producing the s²
 * output phases, interleaved by DepthToSpace. The two are equal in float; the point is int8: onnxruntime's CPU
 * provider has no int8 transposed convolution, but fuses Conv into QLinearConv, and SimpleBaseline spends a
 * third of its time in its three deconvolutions.
 *
 * Output position o = s·m + r of a transposed convolution reads input m + (r + p − k)/s through kernel tap k
 * whenever that division is exact, so phase r is a convolution over the input whose taps sit at those offsets.
 * Applies when s·(H − 1) + outputPadding + k − pads = s·H, i.e. the output is exactly s times the input.
 *
 * Each phase gets a Conv of its own (Concat, then DepthToSpace DCR), holding exactly the original kernel's
 * taps: the weights stay as many as the ConvTranspose's, and so does the work. (One Conv over the union of all
 * phases' offsets — 3×3 for the usual 4×4 stride-2 deconvolution — would store and multiply 2.25 times as
 * many weights, mostly zeros.) Kernels whose phases do not fit that form fall back to the union Conv (CRD).
 */
export function decomposeConvTransposes(model: ModelProto): { model: ModelProto; decomposed: number } {
  const out = clone(ModelProtoSchema, model);
  const graph = out.graph;
  if (graph === undefined) return { model: out, decomposed: 0 };
  const initializers = new Map(graph.initializer.map((t) => [t.name, t]));
  const nodes: NodeProto[] = [];
  const added: TensorProto[] = [];
  let decomposed = 0;
  const phased: { concat: NodeProto; interleave: NodeProto }[] = [];
  for (const node of graph.node) {
    const rewritten = node.opType === "ConvTranspose" && node.domain === "" ? decompose(node, initializers) : undefined;
    if (rewritten === undefined) {
      nodes.push(node);
      continue;
    }
    nodes.push(...rewritten.nodes);
    added.push(...rewritten.initializers);
    if (rewritten.phased !== undefined) phased.push(rewritten.phased);
    decomposed++;
  }
  graph.node = hoistRelus(nodes, phased, new Set(graph.output.map((o) => o.name)));
  const used = new Set(nodes.flatMap((n) => n.input));
  graph.initializer = [...graph.initializer.filter((t) => used.has(t.name)), ...added];
  return { model: out, decomposed };
}

interface Decomposition {
  nodes: NodeProto[];
  initializers: TensorProto[];
  /** The per-phase form's Concat and DepthToSpace. */
  phased?: { concat: NodeProto; interleave: NodeProto };
}

/**
 * A ReLU read straight after a per-phase decomposition moves onto each phase's Conv (ReLU commutes with the
 * Concat and DepthToSpace that only move values): there the quantizer folds it into the Conv's output, where
 * after the DepthToSpace it would cost a dequantize and a requantize of the whole upsampled tensor.
 */
function hoistRelus(nodes: NodeProto[], phased: readonly { concat: NodeProto; interleave: NodeProto }[], graphOutputs: ReadonlySet<string>): NodeProto[] {
  const readers = new Map<string, NodeProto[]>();
  for (const node of nodes) for (const input of node.input) readers.set(input, [...(readers.get(input) ?? []), node]);
  const dropped = new Set<NodeProto>();
  const before = new Map<NodeProto, NodeProto[]>();
  for (const { concat, interleave } of phased) {
    const output = interleave.output[0] as string;
    const only = readers.get(output);
    const relu = only?.length === 1 ? only[0] : undefined;
    if (relu === undefined || relu.opType !== "Relu" || relu.domain !== "" || graphOutputs.has(output)) continue;
    const relus = concat.input.map((input) => create(NodeProtoSchema, { opType: "Relu", name: `${input}/relu`, input: [input], output: [`${input}/relu`] }));
    concat.input = relus.map((r) => r.output[0] as string);
    interleave.output = [relu.output[0] as string];
    before.set(concat, relus);
    dropped.add(relu);
  }
  return nodes.flatMap((node) => (dropped.has(node) ? [] : [...(before.get(node) ?? []), node]));
}

function decompose(node: NodeProto, initializers: ReadonlyMap<string, TensorProto>): Decomposition | undefined {
  if (intAttr(node, "group", 1) !== 1 || node.input[1] === undefined) return undefined;
  const weightProto = initializers.get(node.input[1]);
  if (weightProto === undefined) return undefined;
  const weight = fromTensorProto(weightProto);
  if (weight.dtype !== "float32" || weight.dims.length !== 4) return undefined;
  const [cin = 0, cout = 0, kh = 0, kw = 0] = weight.dims;
  const strides = intsAttr(node, "strides") ?? [1, 1];
  const pads = intsAttr(node, "pads") ?? [0, 0, 0, 0];
  const dilations = intsAttr(node, "dilations") ?? [1, 1];
  const outputPadding = intsAttr(node, "output_padding") ?? [0, 0];
  if (intsAttr(node, "output_shape") !== undefined || dilations.some((d) => d !== 1)) return undefined;
  const [s, sw] = strides as [number, number];
  if (s !== sw || s < 2) return undefined;
  const axes = [
    { k: kh, pb: pads[0] as number, pe: pads[2] as number, op: outputPadding[0] as number },
    { k: kw, pb: pads[1] as number, pe: pads[3] as number, op: outputPadding[1] as number },
  ];
  if (axes.some((a) => a.k + a.op - a.pb - a.pe !== s)) return undefined;
  // Per axis: for each phase r, the (offset, tap) pairs; offsets span [lo, hi] over all phases.
  const taps = axes.map((a) => {
    const perPhase: { offset: number; tap: number }[][] = [];
    for (let r = 0; r < s; r++) {
      const list: { offset: number; tap: number }[] = [];
      for (let k = 0; k < a.k; k++) if ((r + a.pb - k) % s === 0) list.push({ offset: (r + a.pb - k) / s, tap: k });
      perPhase.push(list);
    }
    const offsets = perPhase.flat().map((t) => t.offset);
    return { perPhase, lo: Math.min(...offsets), hi: Math.max(...offsets) };
  });
  const [ty, tx] = taps as [(typeof taps)[number], (typeof taps)[number]];
  const base = node.name !== "" ? node.name : (node.output[0] as string);
  let bias: Float32Array | undefined;
  const biasName = node.input[2];
  if (biasName !== undefined && biasName !== "") {
    const biasProto = initializers.get(biasName);
    if (biasProto === undefined) return undefined;
    bias = fromTensorProto(biasProto).data as Float32Array;
  }
  const perPhase = decomposePerPhase(node, base, weight.data as Float32Array, bias, { cin, cout, kh, kw, s }, ty.perPhase, tx.perPhase);
  if (perPhase !== undefined) return perPhase;
  if (ty.lo > 0 || tx.lo > 0 || ty.hi < 0 || tx.hi < 0) return undefined;
  const kh2 = ty.hi - ty.lo + 1;
  const kw2 = tx.hi - tx.lo + 1;
  const outChannels = cout * s * s;
  const w = weight.data as Float32Array;
  const w2 = new Float32Array(outChannels * cin * kh2 * kw2);
  for (let co = 0; co < cout; co++) {
    for (let ry = 0; ry < s; ry++) {
      for (let rx = 0; rx < s; rx++) {
        const channel = co * s * s + ry * s + rx; // DepthToSpace CRD: c·s² + i·s + j
        for (const y of ty.perPhase[ry] ?? []) {
          for (const x of tx.perPhase[rx] ?? []) {
            for (let ci = 0; ci < cin; ci++) {
              w2[((channel * cin + ci) * kh2 + (y.offset - ty.lo)) * kw2 + (x.offset - tx.lo)] = w[((ci * cout + co) * kh + y.tap) * kw + x.tap] as number;
            }
          }
        }
      }
    }
  }
  const created: TensorProto[] = [toTensorProto(`${base}/phases/weight`, { dtype: "float32", dims: [outChannels, cin, kh2, kw2], data: w2 })];
  const convInputs = [node.input[0] as string, `${base}/phases/weight`];
  if (bias !== undefined) {
    const b = bias;
    created.push(toTensorProto(`${base}/phases/bias`, { dtype: "float32", dims: [outChannels], data: Float32Array.from({ length: outChannels }, (_, c) => b[Math.floor(c / (s * s))] as number) }));
    convInputs.push(`${base}/phases/bias`);
  }
  // Offsets are relative to the phase's input position: negative offsets need padding at the start.
  const conv = create(NodeProtoSchema, {
    opType: "Conv",
    name: `${base}/phases`,
    input: convInputs,
    output: [`${base}/phases`],
    attribute: [ints("kernel_shape", [kh2, kw2]), ints("pads", [-ty.lo, -tx.lo, ty.hi, tx.hi]), ints("strides", [1, 1])],
  });
  return { nodes: [conv, depthToSpace(base, `${base}/phases`, node.output[0] as string, s, "CRD")], initializers: created };
}

interface Tap {
  offset: number;
  tap: number;
}

/**
 * One Conv per phase (ry, rx) over exactly that phase's taps, concatenated phase-major and interleaved by
 * DepthToSpace DCR (input channel (ry·s + rx)·C + c). Undefined when a phase has no taps or needs negative
 * padding (its offsets do not straddle 0), where the union form applies instead.
 */
function decomposePerPhase(
  node: NodeProto,
  base: string,
  w: Float32Array,
  bias: Float32Array | undefined,
  shape: { cin: number; cout: number; kh: number; kw: number; s: number },
  phasesY: readonly (readonly Tap[])[],
  phasesX: readonly (readonly Tap[])[],
): Decomposition | undefined {
  const { cin, cout, kh, kw, s } = shape;
  const span = (list: readonly Tap[]) => {
    const offsets = list.map((t) => t.offset);
    return { lo: Math.min(...offsets), hi: Math.max(...offsets), count: list.length };
  };
  const fits = (list: readonly Tap[]) => {
    if (list.length === 0) return false;
    const { lo, hi, count } = span(list);
    return lo <= 0 && hi >= 0 && hi - lo + 1 === count;
  };
  if (!phasesY.every(fits) || !phasesX.every(fits)) return undefined;
  const nodes: NodeProto[] = [];
  const created: TensorProto[] = [];
  const phaseOutputs: string[] = [];
  for (let ry = 0; ry < s; ry++) {
    for (let rx = 0; rx < s; rx++) {
      const ys = phasesY[ry] as readonly Tap[];
      const xs = phasesX[rx] as readonly Tap[];
      const sy = span(ys);
      const sx = span(xs);
      const khp = sy.count;
      const kwp = sx.count;
      const wp = new Float32Array(cout * cin * khp * kwp);
      for (let co = 0; co < cout; co++) {
        for (const y of ys) {
          for (const x of xs) {
            for (let ci = 0; ci < cin; ci++) {
              wp[((co * cin + ci) * khp + (y.offset - sy.lo)) * kwp + (x.offset - sx.lo)] = w[((ci * cout + co) * kh + y.tap) * kw + x.tap] as number;
            }
          }
        }
      }
      const name = `${base}/phase${ry}${rx}`;
      created.push(toTensorProto(`${name}/weight`, { dtype: "float32", dims: [cout, cin, khp, kwp], data: wp }));
      const inputs = [node.input[0] as string, `${name}/weight`];
      if (bias !== undefined) {
        created.push(toTensorProto(`${name}/bias`, { dtype: "float32", dims: [cout], data: Float32Array.from(bias) }));
        inputs.push(`${name}/bias`);
      }
      nodes.push(
        create(NodeProtoSchema, {
          opType: "Conv",
          name,
          input: inputs,
          output: [name],
          attribute: [ints("kernel_shape", [khp, kwp]), ints("pads", [-sy.lo, -sx.lo, sy.hi, sx.hi]), ints("strides", [1, 1])],
        }),
      );
      phaseOutputs.push(name);
    }
  }
  nodes.push(
    create(NodeProtoSchema, {
      opType: "Concat",
      name: `${base}/phases`,
      input: phaseOutputs,
      output: [`${base}/phases`],
      attribute: [create(AttributeProtoSchema, { name: "axis", type: AttributeProto_AttributeType.INT, i: 1n })],
    }),
  );
  const interleave = depthToSpace(base, `${base}/phases`, node.output[0] as string, s, "DCR");
  nodes.push(interleave);
  return { nodes, initializers: created, phased: { concat: nodes.at(-2) as NodeProto, interleave } };
}

function ints(name: string, values: readonly number[]) {
  return create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.INTS, ints: values.map(BigInt) });
}

function depthToSpace(base: string, input: string, output: string, blocksize: number, mode: "CRD" | "DCR"): NodeProto {
  return create(NodeProtoSchema, {
    opType: "DepthToSpace",
    name: `${base}/depth_to_space`,
    input: [input],
    output: [output],
    attribute: [
      create(AttributeProtoSchema, { name: "blocksize", type: AttributeProto_AttributeType.INT, i: BigInt(blocksize) }),
      create(AttributeProtoSchema, { name: "mode", type: AttributeProto_AttributeType.STRING, s: new TextEncoder().encode(mode) }),
    ],
  });
}

/**
 * Replaces each DepthToSpace whose input shape calibration saw by the Reshape → Transpose → Reshape it is
 * defined as. onnxruntime's CPU provider has no integer DepthToSpace, so a quantized one runs as
 * DequantizeLinear → float DepthToSpace → QuantizeLinear over the largest tensor of a deconvolution; Reshape
 * and Transpose it runs on the int8 data directly. The reshapes fix the spatial size, so this applies only to
 * models whose inputs have a fixed size but for the batch (the batch stays free: a 0 in a Reshape copies it).
 */
export function depthToSpaceAsReshapes(model: ModelProto, shapes: ReadonlyMap<string, readonly number[]>): { model: ModelProto; replaced: number } {
  const out = clone(ModelProtoSchema, model);
  const graph = out.graph;
  if (graph === undefined) return { model: out, replaced: 0 };
  const initializerNames = new Set(graph.initializer.map((t) => t.name));
  const fixedSize = graph.input
    .filter((input) => !initializerNames.has(input.name))
    .every((input) => {
      const dims = input.type?.value.case === "tensorType" ? (input.type.value.value.shape?.dim ?? []) : [];
      return dims.length > 0 && dims.slice(1).every((dim) => dim.value.case === "dimValue" && dim.value.value > 0n);
    });
  if (!fixedSize) return { model: out, replaced: 0 };
  const nodes: NodeProto[] = [];
  const added: TensorProto[] = [];
  let replaced = 0;
  for (const node of graph.node) {
    const shape = node.opType === "DepthToSpace" && node.domain === "" ? shapes.get(node.input[0] as string) : undefined;
    const b = intAttr(node, "blocksize", 0);
    if (shape === undefined || shape.length !== 4 || b < 1 || (shape[1] as number) % (b * b) !== 0) {
      nodes.push(node);
      continue;
    }
    const [, c, h, w] = shape as [number, number, number, number];
    const depth = c / (b * b);
    const base = node.name !== "" ? node.name : (node.output[0] as string);
    const input = node.input[0] as string;
    const output = node.output[0] as string;
    const shapeTensor = (name: string, values: readonly number[]): string => {
      added.push(toTensorProto(name, { dtype: "int64", dims: [values.length], data: BigInt64Array.from(values.map(BigInt)) }));
      return name;
    };
    const transpose = (name: string, from: string, perm: readonly number[]) =>
      create(NodeProtoSchema, { opType: "Transpose", name, input: [from], output: [name], attribute: [ints("perm", perm)] });
    const reshape = (name: string, from: string, dims: readonly number[], to = name) =>
      create(NodeProtoSchema, { opType: "Reshape", name, input: [from, shapeTensor(`${name}_shape`, dims)], output: [to] });
    if (stringAttr(node, "mode", "DCR") !== "CRD") {
      // DCR, written channels-last: onnxruntime runs int8 convolutions in NHWC, so the outer transposes cancel
      // against its own layout transposes, and the one left moves whole runs of C' channels.
      nodes.push(
        transpose(`${base}/nhwc`, input, [0, 2, 3, 1]),
        reshape(`${base}/split`, `${base}/nhwc`, [0, h, w, b, b, depth]),
        transpose(`${base}/interleave`, `${base}/split`, [0, 1, 3, 2, 4, 5]),
        reshape(`${base}/merge`, `${base}/interleave`, [0, h * b, w * b, depth]),
        create(NodeProtoSchema, { opType: "Transpose", name: base, input: [`${base}/merge`], output: [output], attribute: [ints("perm", [0, 3, 1, 2])] }),
      );
    } else {
      nodes.push(
        reshape(`${base}/split`, input, [0, depth, b, b, h, w]),
        transpose(`${base}/interleave`, `${base}/split`, [0, 1, 4, 2, 5, 3]),
        reshape(base, `${base}/interleave`, [0, depth, h * b, w * b], output),
      );
    }
    replaced++;
  }
  graph.node = nodes;
  graph.initializer.push(...added);
  return { model: out, replaced };
}
