import { clone, create } from "@bufbuild/protobuf";
import { fromTensorProto, intAttr, intsAttr, toTensorProto } from "@poseloop/onnx";
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
  for (const node of graph.node) {
    const rewritten = node.opType === "ConvTranspose" && node.domain === "" ? decompose(node, initializers) : undefined;
    if (rewritten === undefined) {
      nodes.push(node);
      continue;
    }
    nodes.push(...rewritten.nodes);
    added.push(...rewritten.initializers);
    decomposed++;
  }
  graph.node = nodes;
  const used = new Set(nodes.flatMap((n) => n.input));
  graph.initializer = [...graph.initializer.filter((t) => used.has(t.name)), ...added];
  return { model: out, decomposed };
}

function decompose(node: NodeProto, initializers: ReadonlyMap<string, TensorProto>): { nodes: NodeProto[]; initializers: TensorProto[] } | undefined {
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
): { nodes: NodeProto[]; initializers: TensorProto[] } | undefined {
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
  nodes.push(depthToSpace(base, `${base}/phases`, node.output[0] as string, s, "DCR"));
  return { nodes, initializers: created };
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
