import * as ort from "onnxruntime-node";
import { clone } from "@bufbuild/protobuf";
import { encodeModel, valueInfo, type ModelProto } from "@poseloop/onnx";
import { ModelProtoSchema } from "@poseloop/proto/onnx/onnx_pb";
import { AppError, Code } from "@poseloop/core";

export type CalibratorKind = "minmax" | "percentile" | "entropy";

/** Model inputs for calibration: one feed (input name → tensor) per batch. */
export type CalibrationFeeds = readonly Readonly<Record<string, ort.Tensor>>[];

/** What calibration learned about one activation tensor. */
export interface TensorRange {
  readonly min: number;
  readonly max: number;
  /** The clipping range the calibrator chose (min/max for MinMax). */
  readonly low: number;
  readonly high: number;
  readonly shape: readonly number[];
}

const BINS = 2048;

/**
 * Runs the fp32 model over the calibration feeds with every tensor of `names` exposed as an output, and
 * chooses a range per tensor: MinMax (observed extremes), Percentile (the p-th percentile of |x|, ORT's
 * symmetric-absolute rule) or Entropy (the threshold minimizing the KL divergence between the histogram of |x|
 * and its 128-level quantization, TensorRT's method). Histograms take a second pass over the data.
 */
export async function calibrate(
  model: ModelProto,
  names: readonly string[],
  feeds: CalibrationFeeds,
  options: { calibrator: CalibratorKind; percentile?: number; sessionOptions?: ort.InferenceSession.SessionOptions },
): Promise<Map<string, TensorRange>> {
  if (feeds.length === 0) throw new AppError(Code.INVALID_ARGUMENT, "calibration needs at least one batch");
  const augmented = clone(ModelProtoSchema, model);
  const graph = augmented.graph;
  if (graph === undefined) throw new AppError(Code.INVALID_ARGUMENT, "the model has no graph");
  const existing = new Set(graph.output.map((o) => o.name));
  for (const name of names) if (!existing.has(name)) graph.output.push(valueInfo(name, "float32", undefined));
  const session = await ort.InferenceSession.create(encodeModel(augmented), options.sessionOptions ?? {});
  try {
    const stats = new Map<string, { min: number; max: number; shape: readonly number[] }>();
    for (const feed of feeds) {
      const out = await session.run(feed, names);
      for (const name of names) {
        const tensor = out[name];
        if (tensor === undefined) continue;
        const data = tensor.data as Float32Array;
        let min = Number.POSITIVE_INFINITY;
        let max = Number.NEGATIVE_INFINITY;
        for (let i = 0; i < data.length; i++) {
          const v = data[i] as number;
          if (v < min) min = v;
          if (v > max) max = v;
        }
        const previous = stats.get(name);
        stats.set(name, { min: Math.min(min, previous?.min ?? min), max: Math.max(max, previous?.max ?? max), shape: tensor.dims });
      }
    }
    const ranges = new Map<string, TensorRange>();
    if (options.calibrator === "minmax") {
      for (const [name, s] of stats) ranges.set(name, { ...s, low: s.min, high: s.max });
      return ranges;
    }
    // Second pass: histograms of |x| over [0, max |x|].
    const histograms = new Map<string, Float64Array>();
    for (const name of stats.keys()) histograms.set(name, new Float64Array(BINS));
    for (const feed of feeds) {
      const out = await session.run(feed, names);
      for (const name of names) {
        const tensor = out[name];
        const s = stats.get(name);
        const histogram = histograms.get(name);
        if (tensor === undefined || s === undefined || histogram === undefined) continue;
        const bound = Math.max(Math.abs(s.min), Math.abs(s.max));
        if (bound === 0) continue;
        const data = tensor.data as Float32Array;
        const perBin = BINS / bound;
        for (let i = 0; i < data.length; i++) {
          const bin = Math.min(BINS - 1, Math.floor(Math.abs(data[i] as number) * perBin));
          histogram[bin] = (histogram[bin] as number) + 1;
        }
      }
    }
    for (const [name, s] of stats) {
      const histogram = histograms.get(name) as Float64Array;
      const bound = Math.max(Math.abs(s.min), Math.abs(s.max));
      const threshold = options.calibrator === "percentile" ? percentileThreshold(histogram, bound, options.percentile ?? 99.999) : entropyThreshold(histogram, bound);
      // Non-negative tensors (after ReLU) keep their lower end at 0.
      ranges.set(name, { ...s, low: s.min >= 0 ? 0 : Math.max(s.min, -threshold), high: Math.min(s.max, threshold) });
    }
    return ranges;
  } finally {
    await session.release();
  }
}

/** The value below which `percentile` % of |x| falls. */
export function percentileThreshold(histogram: Float64Array, bound: number, percentile: number): number {
  const total = histogram.reduce((a, b) => a + b, 0);
  if (total === 0 || bound === 0) return bound;
  const target = (total * percentile) / 100;
  let cumulative = 0;
  for (let i = 0; i < histogram.length; i++) {
    cumulative += histogram[i] as number;
    if (cumulative >= target) return ((i + 1) * bound) / histogram.length;
  }
  return bound;
}

/**
 * The clipping threshold of |x| minimizing KL(P‖Q), P the histogram clipped at the threshold (outliers folded
 * into the last bin) and Q its quantization to 128 levels expanded back over P's support.
 */
export function entropyThreshold(histogram: Float64Array, bound: number, levels = 128): number {
  const bins = histogram.length;
  if (bound === 0 || histogram.every((v) => v === 0)) return bound;
  let best = bins;
  let bestDivergence = Number.POSITIVE_INFINITY;
  for (let i = levels; i <= bins; i++) {
    const p = Float64Array.from(histogram.subarray(0, i));
    let outliers = 0;
    for (let j = i; j < bins; j++) outliers += histogram[j] as number;
    p[i - 1] = (p[i - 1] as number) + outliers;
    const q = new Float64Array(i);
    const width = i / levels;
    for (let level = 0; level < levels; level++) {
      const start = Math.floor(level * width);
      const end = level === levels - 1 ? i : Math.floor((level + 1) * width);
      let mass = 0;
      let nonZero = 0;
      for (let j = start; j < end; j++) {
        mass += histogram[j] as number;
        if ((histogram[j] as number) > 0) nonZero++;
      }
      if (nonZero === 0) continue;
      for (let j = start; j < end; j++) if ((histogram[j] as number) > 0) q[j] = mass / nonZero;
    }
    const divergence = kl(p, q);
    if (divergence < bestDivergence) {
      bestDivergence = divergence;
      best = i;
    }
  }
  return (best * bound) / bins;
}

function kl(p: Float64Array, q: Float64Array): number {
  const sp = p.reduce((a, b) => a + b, 0);
  const sq = q.reduce((a, b) => a + b, 0);
  if (sp === 0 || sq === 0) return Number.POSITIVE_INFINITY;
  let divergence = 0;
  for (let i = 0; i < p.length; i++) {
    const pi = (p[i] as number) / sp;
    if (pi === 0) continue;
    const qi = (q[i] as number) / sq;
    divergence += qi === 0 ? pi * 20 : pi * Math.log(pi / qi);
  }
  return divergence;
}
