import { hostTensor, ints, str } from "@poseloop/onnx";
import { type Tape, type Sym } from "../tape.js";
import { num, nums, windowOutput } from "./dims.js";

export interface PoolOptions {
  readonly kernel: readonly [number, number];
  /** Default: the kernel. */
  readonly stride?: readonly [number, number];
  /** [top, left, bottom, right]. */
  readonly pads?: readonly [number, number, number, number];
}

/**
 * Max pooling. The gradient goes to the position of each window's maximum: the forward pass also emits the
 * flat argmax indices, and the backward scatters dy there, adding where windows overlap.
 */
export function maxPool2d(t: Tape, x: Sym, options: PoolOptions): Sym {
  const stride = options.stride ?? options.kernel;
  const pads = options.pads ?? [0, 0, 0, 0];
  const [n, c, h, w] = x.shape;
  const shape = [n ?? 0, c ?? 0, windowOutput(num(h), options.kernel[0], stride[0], pads[0], pads[2]), windowOutput(num(w), options.kernel[1], stride[1], pads[1], pads[3])];
  const [y, indices] = t.g.node(
    "MaxPool",
    [x.value],
    { kernel_shape: ints(options.kernel), strides: ints(stride), pads: ints(pads) },
    { outputs: [{ shape }, { dtype: "int64", shape }] },
  );
  const out = t.sym(y as NonNullable<typeof y>, shape, x.requiresGrad);
  t.record([x], [out], ([dy]) => {
    if (dy === undefined || indices === undefined) return [];
    const total = nums(x.shape).reduce((a, b) => a * b, 1);
    const zeros = t.g.op("ConstantOfShape", [t.g.int64s([total])], { value: { t: hostTensor("float32", [1], [0]) } }, { shape: [total] });
    const flatIndices = t.g.op("Reshape", [indices, t.g.int64s([-1])]);
    const flatDy = t.g.op("Reshape", [dy.value, t.g.int64s([-1])]);
    const scattered = t.g.op("ScatterElements", [zeros, flatIndices, flatDy], { axis: { i: 0 }, reduction: str("add") }, { shape: [total] });
    return [t.sym(t.g.op("Reshape", [scattered, t.g.int64s(nums(x.shape))], {}, { shape: x.shape }), x.shape, true)];
  });
  return out;
}

/**
 * Average pooling with PyTorch's default count_include_pad=true semantics (the divisor is always kh·kw).
 * The gradient spreads dy/(kh·kw) back over each window: a depthwise transposed convolution with a kernel of
 * ones.
 */
export function avgPool2d(t: Tape, x: Sym, options: PoolOptions): Sym {
  const stride = options.stride ?? options.kernel;
  const pads = options.pads ?? [0, 0, 0, 0];
  const [n, c, h, w] = x.shape;
  const [kh, kw] = options.kernel;
  const shape = [n ?? 0, c ?? 0, windowOutput(num(h), kh, stride[0], pads[0], pads[2]), windowOutput(num(w), kw, stride[1], pads[1], pads[3])];
  const y = t.sym(
    t.g.op("AveragePool", [x.value], { kernel_shape: ints(options.kernel), strides: ints(stride), pads: ints(pads), count_include_pad: { i: 1 } }, { shape }),
    shape,
    x.requiresGrad,
  );
  t.record([x], [y], ([dy]) => {
    if (dy === undefined) return [];
    const channels = num(c);
    const kernel = t.g.constant(hostTensor("float32", [channels, 1, kh, kw], new Float32Array(channels * kh * kw).fill(1 / (kh * kw))), "avgpool_grad_kernel");
    const outputPadding = [0, 1].map((axis) => num(x.shape[2 + axis]) - (stride[axis] as number) * (num(shape[2 + axis]) - 1) - (options.kernel[axis] as number) + (pads[axis] as number) + (pads[axis + 2] as number));
    const dx = t.g.op(
      "ConvTranspose",
      [dy.value, kernel],
      { strides: ints(stride), pads: ints(pads), group: { i: channels }, output_padding: ints(outputPadding), kernel_shape: ints(options.kernel) },
      { shape: x.shape },
    );
    return [t.sym(dx, x.shape, true)];
  });
  return y;
}

/** Global average pooling [N, C, H, W] → [N, C, 1, 1]; the gradient is dy/(H·W) everywhere. */
export function globalAvgPool(t: Tape, x: Sym): Sym {
  const shape = [x.shape[0] ?? 0, x.shape[1] ?? 0, 1, 1];
  const y = t.sym(t.g.op("GlobalAveragePool", [x.value], {}, { shape }), shape, x.requiresGrad);
  t.record([x], [y], ([dy]) => {
    if (dy === undefined) return [];
    const area = num(x.shape[2]) * num(x.shape[3]);
    const scaled = t.g.op("Mul", [dy.value, t.g.scalar(1 / area)], {}, { shape });
    return [t.sym(t.g.op("Expand", [scaled, t.g.int64s(nums(x.shape))], {}, { shape: x.shape }), x.shape, true)];
  });
  return y;
}
