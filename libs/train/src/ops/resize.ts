import { hostTensor, str } from "@poseloop/onnx";
import { type Tape, type Sym } from "../tape.js";
import { num } from "./dims.js";

/** Nearest-neighbour upsampling by an integer factor (PyTorch nn.Upsample(mode="nearest")). */
export function upsampleNearest(t: Tape, x: Sym, factor: number): Sym {
  const [n, c, h, w] = x.shape;
  const shape = [n ?? 0, c ?? 0, num(h) * factor, num(w) * factor];
  const y = t.sym(
    t.g.op(
      "Resize",
      [x.value, undefined, t.g.constant(hostTensor("float32", [4], [1, 1, factor, factor]), "scales")],
      { mode: str("nearest"), coordinate_transformation_mode: str("asymmetric"), nearest_mode: str("floor") },
      { shape },
    ),
    shape,
    x.requiresGrad,
  );
  t.record([x], [y], ([dy]) => {
    if (dy === undefined) return [];
    // Each input pixel fed a factor×factor block: sum the block.
    const blocks = t.g.op("Reshape", [dy.value, t.g.int64s([num(n), num(c), num(h), factor, num(w), factor])]);
    return [t.sym(t.g.op("ReduceSum", [blocks, t.g.int64s([3, 5])], { keepdims: { i: 0 } }, { shape: x.shape }), x.shape, true)];
  });
  return y;
}

/**
 * Bilinear resizing to outHeight×outWidth with half-pixel centres (PyTorch align_corners=False). Bilinear
 * resizing is separable, y = A_h·x·A_wᵀ, so the gradient is A_hᵀ·dy·A_w with the same constant matrices.
 */
export function upsampleBilinear(t: Tape, x: Sym, outHeight: number, outWidth: number): Sym {
  const [n, c, h, w] = x.shape;
  const shape = [n ?? 0, c ?? 0, outHeight, outWidth];
  const y = t.sym(
    t.g.op(
      "Resize",
      [x.value, undefined, undefined, t.g.int64s([num(n), num(c), outHeight, outWidth])],
      { mode: str("linear"), coordinate_transformation_mode: str("half_pixel") },
      { shape },
    ),
    shape,
    x.requiresGrad,
  );
  t.record([x], [y], ([dy]) => {
    if (dy === undefined) return [];
    const aw = t.g.constant(interpolationMatrix(num(w), outWidth, false), "bilinear_aw");
    const ahT = t.g.constant(interpolationMatrix(num(h), outHeight, true), "bilinear_ah_t");
    const rows = t.g.op("MatMul", [dy.value, aw], {}, { shape: [n ?? 0, c ?? 0, outHeight, num(w)] });
    return [t.sym(t.g.op("MatMul", [ahT, rows], {}, { shape: x.shape }), x.shape, true)];
  });
  return y;
}

/**
 * The matrix A [out, in] of 1-D linear interpolation with half-pixel centres (source coordinates below 0 clamp
 * to 0, as PyTorch and ONNX do), or its transpose [in, out] when `transpose` is set.
 */
function interpolationMatrix(inSize: number, outSize: number, transpose: boolean) {
  const matrix = new Float32Array(inSize * outSize);
  const scale = inSize / outSize;
  for (let o = 0; o < outSize; o++) {
    const source = Math.max(0, (o + 0.5) * scale - 0.5);
    const i0 = Math.min(Math.floor(source), inSize - 1);
    const i1 = Math.min(i0 + 1, inSize - 1);
    const frac = source - i0;
    const put = (i: number, weight: number): void => {
      const index = transpose ? i * outSize + o : o * inSize + i;
      matrix[index] = (matrix[index] as number) + weight;
    };
    put(i0, 1 - frac);
    put(i1, frac);
  }
  return hostTensor("float32", transpose ? [inSize, outSize] : [outSize, inSize], matrix);
}

