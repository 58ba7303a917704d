import { ints, type Attrs, type Dim, type Value } from "@poseloop/onnx";
import { Tape, type Sym } from "../tape.js";
import { num, windowOutput } from "./dims.js";

export interface ConvOptions {
  /** [height, width]. Default [1, 1]. */
  readonly stride?: readonly [number, number];
  /** [top, left, bottom, right], as ONNX orders pads. Default no padding. */
  readonly pads?: readonly [number, number, number, number];
  readonly dilation?: readonly [number, number];
  readonly group?: number;
}

export interface ConvTransposeOptions extends ConvOptions {
  /** Extra rows/columns at the bottom/right of the output. Default [0, 0]. */
  readonly outputPadding?: readonly [number, number];
}

function resolved(options: ConvOptions) {
  return {
    stride: options.stride ?? ([1, 1] as const),
    pads: options.pads ?? ([0, 0, 0, 0] as const),
    dilation: options.dilation ?? ([1, 1] as const),
    group: options.group ?? 1,
  };
}

/**
 * 2-D convolution. x: [N, Cin, H, W], w: [Cout, Cin/g, kh, kw], b: [Cout].
 * Gradients: dx by convInputGrad; dw by convWeightGrad;
 * db = Σ dy over N, H, W.
 */
export function conv2d(t: Tape, x: Sym, w: Sym, b: Sym | undefined, options: ConvOptions = {}): Sym {
  const { stride, pads, dilation, group } = resolved(options);
  const [n, , h, wd] = x.shape;
  const [cout, , kh, kw] = w.shape;
  const ho = windowOutput(num(h), num(kh), stride[0], pads[0], pads[2], dilation[0]);
  const wo = windowOutput(num(wd), num(kw), stride[1], pads[1], pads[3], dilation[1]);
  const shape = [n ?? 0, cout ?? 0, ho, wo];
  const attrs = { strides: ints(stride), pads: ints(pads), dilations: ints(dilation), group: { i: group }, kernel_shape: ints([num(kh), num(kw)]) };
  const y = t.sym(emitConv(t, x.value, w.value, b?.value, attrs, shape, group), shape, Tape.needsGrad(x, w, b));
  t.record(b === undefined ? [x, w] : [x, w, b], [y], ([dy]) => {
    if (dy === undefined) return [];
    const dx = x.requiresGrad ? t.sym(convInputGrad(t, x, dy, w, { stride, pads, dilation, group }), x.shape, true) : undefined;
    const dw = w.requiresGrad ? convWeightGrad(t, x, dy, [num(kh), num(kw)], stride, pads, dilation, group) : undefined;
    const db = b?.requiresGrad === true ? reduceToChannels(t, dy) : undefined;
    return [dx, dw, db];
  });
  return y;
}

/**
 * A Conv node — or, when the tape compiles for onnxruntime's CPU provider (`t.nchwcBlock`), the same
 * convolution through that provider's blocked-layout kernel: the input reordered to [N, C/B, H, W, B]
 * (com.microsoft.nchwc ReorderInput), the weight to [Co/B, Ci/B, kh, kw, B, B] by a Reshape and a Transpose,
 * nchwc Conv, and the output reordered back. onnxruntime does that itself only for convolutions whose weights
 * are initializers, which a training graph's (inputs, updated every step) are not, so its convolutions ran
 * through the generic im2col + GEMM kernel, one image at a time. Ungrouped fp32 convolutions whose channel
 * counts are multiples of the block qualify (the 3-channel stem and the 17-heatmap head stay standard).
 * Faster on every model measured, most on the small ones (docs/engine-notes.md, "Blocked convolutions").
 */
function emitConv(t: Tape, x: Value, w: Value, b: Value | undefined, attrs: Attrs, shape: readonly Dim[], group: number): Value {
  const block = t.nchwcBlock;
  const [co, ci, kh, kw] = (w.shape ?? []).map((d) => num(d));
  if (block === undefined || group !== 1 || w.dtype !== "float32" || co === undefined || ci === undefined || kh === undefined || kw === undefined || co % block !== 0 || ci % block !== 0) {
    return t.g.op("Conv", [x, w, b], attrs, { shape });
  }
  const g = t.g;
  const split = g.op("Reshape", [w, g.int64s([co / block, block, ci / block, block, kh, kw])], {}, { shape: [co / block, block, ci / block, block, kh, kw] });
  const blocked = g.op("Transpose", [split], { perm: ints([0, 2, 4, 5, 3, 1]) }, { shape: [co / block, ci / block, kh, kw, block, block] });
  const weight = g.op("Reshape", [blocked, g.int64s([co, ci, kh, kw])], {}, { shape: [co, ci, kh, kw] });
  const input = g.op("ReorderInput", [x], {}, { domain: NCHWC, ...(x.shape === undefined ? {} : { shape: x.shape }) });
  const y = g.op("Conv", [input, weight, b], attrs, { domain: NCHWC, shape });
  return g.op("ReorderOutput", [y], { channels: { i: co } }, { domain: NCHWC, shape });
}

/** The operator domain of onnxruntime's blocked-layout CPU kernels (ReorderInput, Conv, ReorderOutput). */
export const NCHWC = "com.microsoft.nchwc";

/**
 * The input gradient of a convolution. At stride 1 (ungrouped, fp32) it is the convolution of dy with the
 * kernel transposed to [Cin, Cout] and flipped in space, padded by dilation·(k − 1) − pad: a convolution kernel
 * (on the CPU provider the blocked one, see emitConv), where ConvTranspose goes through a GEMM and a col2im scatter;
 * the flip costs two ops on the weights and made HRNet steps faster (docs/engine-notes.md, "Input gradient at
 * stride 1").
 * Otherwise (strided, grouped, or fp16, whose graphs are for GPU providers where ConvTranspose is the
 * data-gradient kernel itself): ConvTranspose(dy, w) with the output padding that restores H×W.
 */
function convInputGrad(
  t: Tape,
  x: Sym,
  dy: Sym,
  w: Sym,
  { stride, pads, dilation, group }: { stride: readonly [number, number]; pads: readonly [number, number, number, number]; dilation: readonly [number, number]; group: number },
): Value {
  const [co, ci, kh, kw] = w.shape.map((d) => num(d)) as [number, number, number, number];
  const kernel = [kh, kw] as const;
  const flippedPads = [0, 1, 0, 1].map((axis, i) => (dilation[axis] as number) * ((kernel[axis] as number) - 1) - (pads[i] as number));
  if (group === 1 && stride[0] === 1 && stride[1] === 1 && w.value.dtype === "float32" && flippedPads.every((p) => p >= 0)) {
    let flipped = t.g.op("Transpose", [w.value], { perm: ints([1, 0, 2, 3]) }, { shape: [ci, co, kh, kw] });
    if (kh > 1 || kw > 1) {
      const end = -(2 ** 53);
      flipped = t.g.op("Slice", [flipped, t.g.int64s([-1, -1]), t.g.int64s([end, end]), t.g.int64s([2, 3]), t.g.int64s([-1, -1])], {}, { shape: [ci, co, kh, kw] });
    }
    return emitConv(t, dy.value, flipped, undefined, { strides: ints([1, 1]), pads: ints(flippedPads), dilations: ints(dilation), group: { i: 1 }, kernel_shape: ints(kernel) }, x.shape, 1);
  }
  const outputPadding = [0, 1].map((axis) => {
    const size = num(x.shape[2 + axis]);
    return size - ((stride[axis] as number) * (num(dy.shape[2 + axis]) - 1) + ((kernel[axis] as number) - 1) * (dilation[axis] as number) + 1 - (pads[axis] as number) - (pads[axis + 2] as number));
  });
  return t.g.op(
    "ConvTranspose",
    [dy.value, w.value],
    { strides: ints(stride), pads: ints(pads), dilations: ints(dilation), group: { i: group }, output_padding: ints(outputPadding), kernel_shape: ints(kernel) },
    { shape: x.shape },
  );
}

/**
 * 2-D transposed convolution. x: [N, Cin, H, W], w: [Cin, Cout/g, kh, kw], b: [Cout].
 * Gradients: dx = Conv(dy, w) with the same stride, pads and dilation; dw = convWeightGrad with dy in the role
 * of the convolution input and x in the role of its output gradient; db = Σ dy.
 */
export function convTranspose2d(t: Tape, x: Sym, w: Sym, b: Sym | undefined, options: ConvTransposeOptions = {}): Sym {
  const { stride, pads, dilation, group } = resolved(options);
  const outputPadding = options.outputPadding ?? [0, 0];
  const [n, , h, wd] = x.shape;
  const [, coutPerGroup, kh, kw] = w.shape;
  const ho = stride[0] * (num(h) - 1) + outputPadding[0] + (num(kh) - 1) * dilation[0] + 1 - pads[0] - pads[2];
  const wo = stride[1] * (num(wd) - 1) + outputPadding[1] + (num(kw) - 1) * dilation[1] + 1 - pads[1] - pads[3];
  const shape = [n ?? 0, num(coutPerGroup) * group, ho, wo];
  const attrs = {
    strides: ints(stride),
    pads: ints(pads),
    dilations: ints(dilation),
    group: { i: group },
    output_padding: ints(outputPadding),
    kernel_shape: ints([num(kh), num(kw)]),
  };
  const y = t.sym(t.g.op("ConvTranspose", [x.value, w.value, b?.value], attrs, { shape }), shape, Tape.needsGrad(x, w, b));
  t.record(b === undefined ? [x, w] : [x, w, b], [y], ([dy]) => {
    if (dy === undefined) return [];
    const dx = x.requiresGrad
      ? t.sym(
          emitConv(t, dy.value, w.value, undefined, { strides: ints(stride), pads: ints(pads), dilations: ints(dilation), group: { i: group }, kernel_shape: ints([num(kh), num(kw)]) }, x.shape, group),
          x.shape,
          true,
        )
      : undefined;
    const dw = w.requiresGrad ? convWeightGrad(t, dy, x, [num(kh), num(kw)], stride, pads, dilation, group) : undefined;
    const db = b?.requiresGrad === true ? reduceToChannels(t, dy) : undefined;
    return [dx, dw, db];
  });
  return y;
}

/** Σ over N, H, W: [N, C, H, W] → [C]. */
export function reduceToChannels(t: Tape, dy: Sym): Sym {
  const shape = [dy.shape[1] ?? 0];
  return t.sym(t.g.op("ReduceSum", [dy.value, t.g.int64s([0, 2, 3])], { keepdims: { i: 0 } }, { shape }), shape, true);
}

/**
 * The weight gradient of a convolution of `input` [N, Ci, H, W] whose output gradient is `gradOut`
 * [N, Co, Ho, Wo]: [Co, Ci/g, kh, kw]. Ungrouped: per-tap GEMMs (im2colWeightGrad). Grouped: one convolution
 * where the batch becomes the channel axis (input → [Ci/g, g·N, H, W], gradOut → [Co, N, Ho, Wo] as the kernel,
 * group g), with the forward stride as dilation and the forward dilation as stride; rows the forward pass never
 * reached (the remainder of the stride) are cut from the end padding, or sliced off the input.
 */
export function convWeightGrad(
  t: Tape,
  input: Sym,
  gradOut: Sym,
  kernel: readonly [number, number],
  stride: readonly [number, number],
  pads: readonly [number, number, number, number],
  dilation: readonly [number, number],
  group: number,
): Sym {
  // Per-tap GEMMs need enough input channels to keep each GEMM busy; a stem over 3 colour channels with a 7x7
  // kernel would be 49 thin GEMMs, where the single convolution is faster (docs/engine-notes.md).
  const inChannels = num(input.shape[1]);
  return group === 1 && inChannels >= 16
    ? im2colWeightGrad(t, input, gradOut, kernel, stride, pads, dilation)
    : groupedWeightGrad(t, input, gradOut, kernel, stride, pads, dilation, group);
}

/**
 * The weight gradient of an ungrouped convolution as one GEMM per kernel tap (im2col without the big column
 * matrix): tap (ky, kx) reads a strided window of the padded input, and
 * dW[:, :, ky, kx] = dy [Co, N·Ho·Wo] × window [N·Ho·Wo, Ci]. The input is moved to channels-last first, so
 * a window's rows are runs of Wo·Ci contiguous values (Ci at stride 2) rather than Wo: onnxruntime's Slice
 * copies them on one thread, and the short rows of channels-first windows made slicing a large share of a small
 * model's kernel time. The variants that measured slower (a transposed-A GEMM, one concatenated im2col GEMM, a
 * single large-kernel convolution) are in docs/engine-notes.md, "Weight gradient", so nobody redoes them.
 */
function im2colWeightGrad(
  t: Tape,
  input: Sym,
  gradOut: Sym,
  kernel: readonly [number, number],
  stride: readonly [number, number],
  pads: readonly [number, number, number, number],
  dilation: readonly [number, number],
): Sym {
  const g = t.g;
  const [n, ci, h, w] = input.shape.map((d) => num(d)) as [number, number, number, number];
  const [, co, ho, wo] = gradOut.shape.map((d) => num(d)) as [number, number, number, number];
  const positions = n * ho * wo;
  let x: Value = g.op("Transpose", [input.value], { perm: ints([0, 2, 3, 1]) }, { shape: [n, h, w, ci] });
  if (pads.some((p) => p !== 0)) {
    x = g.op("Pad", [x, g.int64s([0, pads[0], pads[1], 0, 0, pads[2], pads[3], 0])], {}, { shape: [n, h + pads[0] + pads[2], w + pads[1] + pads[3], ci] });
  }
  const dy = g.op("Reshape", [g.op("Transpose", [gradOut.value], { perm: ints([1, 0, 2, 3]) }), g.int64s([co, positions])], {}, { shape: [co, positions] });
  const taps: Value[] = [];
  for (let ky = 0; ky < kernel[0]; ky++) {
    for (let kx = 0; kx < kernel[1]; kx++) {
      const y0 = ky * dilation[0];
      const x0 = kx * dilation[1];
      const window =
        kernel[0] === 1 && kernel[1] === 1 && stride[0] === 1 && stride[1] === 1 && !pads.some((p) => p !== 0)
          ? x
          : g.op(
              "Slice",
              [x, g.int64s([y0, x0]), g.int64s([y0 + (ho - 1) * stride[0] + 1, x0 + (wo - 1) * stride[1] + 1]), g.int64s([1, 2]), g.int64s([stride[0], stride[1]])],
              {},
              { shape: [n, ho, wo, ci] },
            );
      const flat = g.op("Reshape", [window, g.int64s([positions, ci])], {}, { shape: [positions, ci] });
      taps.push(g.op("Unsqueeze", [g.op("Gemm", [dy, flat], {}, { shape: [co, ci] }), g.int64s([2])], {}, { shape: [co, ci, 1] }));
    }
  }
  const stacked = taps.length === 1 ? (taps[0] as Value) : g.op("Concat", taps, { axis: { i: 2 } }, { shape: [co, ci, taps.length] });
  const shape = [co, ci, kernel[0], kernel[1]];
  return t.sym(g.op("Reshape", [stacked, g.int64s(shape)], {}, { shape }), shape, true);
}

/** The weight gradient of a grouped (or depthwise) convolution as one grouped convolution, batch as channels. */
function groupedWeightGrad(
  t: Tape,
  input: Sym,
  gradOut: Sym,
  kernel: readonly [number, number],
  stride: readonly [number, number],
  pads: readonly [number, number, number, number],
  dilation: readonly [number, number],
  group: number,
): Sym {
  const [n, ci, h, w] = input.shape.map((d) => num(d));
  const [, co, ho, wo] = gradOut.shape.map((d) => num(d));
  const spatial = [h as number, w as number];
  const outSpatial = [ho as number, wo as number];
  let x: Value = input.value;
  const endPads = [pads[2], pads[3]];
  const keep = [...spatial];
  for (const axis of [0, 1] as const) {
    const size = spatial[axis] as number;
    const rem = size + pads[axis] + pads[axis + 2 as 2 | 3] - (kernel[axis] - 1) * dilation[axis] - 1 - ((outSpatial[axis] as number) - 1) * stride[axis];
    if (rem <= (endPads[axis] as number)) endPads[axis] = (endPads[axis] as number) - rem;
    else {
      keep[axis] = size - (rem - (endPads[axis] as number));
      endPads[axis] = 0;
    }
  }
  if (keep[0] !== spatial[0] || keep[1] !== spatial[1]) {
    x = t.g.op("Slice", [x, t.g.int64s([0, 0]), t.g.int64s(keep), t.g.int64s([2, 3])], {}, { shape: [n ?? 0, ci ?? 0, keep[0] ?? 0, keep[1] ?? 0] });
  }
  const cg = (ci as number) / group;
  let xT: Value;
  if (group === 1) {
    xT = t.g.op("Transpose", [x], { perm: ints([1, 0, 2, 3]) }, { shape: [ci ?? 0, n ?? 0, keep[0] ?? 0, keep[1] ?? 0] });
  } else {
    const grouped = t.g.op("Reshape", [x, t.g.int64s([n as number, group, cg, keep[0] as number, keep[1] as number])]);
    const swapped = t.g.op("Transpose", [grouped], { perm: ints([2, 1, 0, 3, 4]) });
    xT = t.g.op("Reshape", [swapped, t.g.int64s([cg, group * (n as number), keep[0] as number, keep[1] as number])], {}, { shape: [cg, group * (n as number), keep[0] ?? 0, keep[1] ?? 0] });
  }
  const dyT = t.g.op("Transpose", [gradOut.value], { perm: ints([1, 0, 2, 3]) }, { shape: [co ?? 0, n ?? 0, ho ?? 0, wo ?? 0] });
  const grad = t.g.op(
    "Conv",
    [xT, dyT],
    {
      strides: ints(dilation),
      dilations: ints(stride),
      pads: ints([pads[0], pads[1], endPads[0] as number, endPads[1] as number]),
      group: { i: group },
      kernel_shape: ints([ho as number, wo as number]),
    },
    { shape: [cg, co ?? 0, kernel[0], kernel[1]] },
  );
  const shape = [co ?? 0, cg, kernel[0], kernel[1]];
  return t.sym(t.g.op("Transpose", [grad], { perm: ints([1, 0, 2, 3]) }, { shape }), shape, true);
}
