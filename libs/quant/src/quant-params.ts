/** Element types of quantized activations. uint8 is what onnxruntime's x86 CPU kernels fuse everywhere. */
export type ActivationType = "uint8" | "int8";

/** Scale and zero point of one tensor (per tensor) or one channel. */
export interface QuantParams {
  readonly scale: number;
  readonly zeroPoint: number;
}

/**
 * Asymmetric activation parameters for the range [min, max], widened to include 0 (so zero is exact, as
 * padding and ReLU need) and never degenerate.
 */
export function activationParams(min: number, max: number, type: ActivationType): QuantParams {
  const low = Math.min(0, min);
  const high = Math.max(0, max);
  const span = high - low;
  const scale = span > 0 && Number.isFinite(span) ? span / 255 : 1;
  const qmin = type === "uint8" ? 0 : -128;
  const zeroPoint = Math.min(qmin + 255, Math.max(qmin, Math.round(qmin - low / scale)));
  return { scale, zeroPoint };
}

/** The int8 weight range [−127, 127]: full precision where onnxruntime's int8 kernels compute exactly. */
export const FULL_WEIGHT_RANGE = 127;
/**
 * The reduced weight range [−64, 64] (onnxruntime's reduce_range, 7 bits of magnitude). On x86 CPUs without
 * VNNI (AVX2, AVX-512 before Cascade Lake, AMD before Zen 4) onnxruntime's int8 GEMM multiplies with
 * VPMADDUBSW, which adds two uint8·int8 products into an int16 and saturates: 2·255·127 does not fit, 2·255·64
 * does. Measured on an AVX2 EPYC: full-range weights brought a model's int8 output to 26 and 19 dB SQNR against
 * fp32 where onnxruntime's exact QDQ semantics give 37 and 42; reduced weights give 36 and 37 either way.
 */
export const REDUCED_WEIGHT_RANGE = 64;

/** Symmetric int8 scale per channel of `weights` along `axis`: max |w| / range (1 for an all-zero channel). */
export function symmetricChannelScales(weights: Float32Array, dims: readonly number[], axis: number, range: number): Float64Array {
  const channels = dims[axis] as number;
  const inner = dims.slice(axis + 1).reduce((a, b) => a * b, 1);
  const scales = new Float64Array(channels);
  for (let i = 0; i < weights.length; i++) {
    const channel = Math.floor(i / inner) % channels;
    scales[channel] = Math.max(scales[channel] as number, Math.abs(weights[i] as number));
  }
  for (let c = 0; c < channels; c++) scales[c] = (scales[c] as number) > 0 ? (scales[c] as number) / range : 1;
  return scales;
}

/** Quantizes weights to int8 with per-channel scales along `axis` (zero points 0, values in [−range, range]). */
export function quantizeWeights(weights: Float32Array, dims: readonly number[], axis: number, scales: Float64Array, range: number): Int8Array {
  const channels = dims[axis] as number;
  const inner = dims.slice(axis + 1).reduce((a, b) => a * b, 1);
  const out = new Int8Array(weights.length);
  for (let i = 0; i < weights.length; i++) {
    const scale = scales[Math.floor(i / inner) % channels] as number;
    out[i] = Math.max(-range, Math.min(range, Math.round((weights[i] as number) / scale)));
  }
  return out;
}

/** int32 bias with scale input_scale · weight_scale[c], as QLinearConv expects. */
export function quantizeBias(bias: Float32Array, inputScale: number, weightScales: Float64Array): { values: Int32Array; scales: Float32Array } {
  const values = new Int32Array(bias.length);
  const scales = new Float32Array(bias.length);
  for (let c = 0; c < bias.length; c++) {
    const scale = inputScale * (weightScales[weightScales.length === 1 ? 0 : c] as number);
    scales[c] = scale;
    values[c] = Math.max(-2147483647, Math.min(2147483647, Math.round((bias[c] as number) / scale)));
  }
  return { values, scales };
}
