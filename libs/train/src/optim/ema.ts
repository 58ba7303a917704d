import { AppError, Code } from "@poseloop/core";

/**
 * An exponential moving average of the weights (TRAIN.EMA): after every optimizer update, each parameter and
 * BatchNorm running statistic becomes `ema = d * ema + (1 - d) * weight`, with a decay that warms up as
 * Ultralytics' ModelEMA does, `d = decay * (1 - exp(-updates / warmupUpdates))` (updates counted from 1), so the
 * first averages follow the weights instead of the random initialization. The PyTorch engine applies the same
 * formula (services/trainer/pytorch/poseloop_torch/engine.py) and its test compares it with
 * torch.optim.swa_utils.AveragedModel(use_buffers=True) given this decay as avg_fn.
 */
export interface EmaConfig {
  /** In (0, 1). */
  readonly decay: number;
  /** The warm-up's time constant in optimizer updates; 0: none (d = decay from the first update). */
  readonly warmupUpdates: number;
}

/** Every problem of `config`, worded for a caller's options (the trainer checks TRAIN.EMA before this). */
export function emaProblems(config: EmaConfig): string[] {
  const problems: string[] = [];
  if (!(config.decay > 0 && config.decay < 1)) problems.push(`EMA decay must lie in (0, 1), got ${config.decay}`);
  if (!Number.isSafeInteger(config.warmupUpdates) || config.warmupUpdates < 0) problems.push(`EMA warm-up must be a non-negative integer of updates, got ${config.warmupUpdates}`);
  return problems;
}

/** Throws INVALID_ARGUMENT listing every problem of `config`. */
export function checkEma(config: EmaConfig): void {
  const problems = emaProblems(config);
  if (problems.length > 0) throw new AppError(Code.INVALID_ARGUMENT, `invalid EMA: ${problems.join("; ")}`);
}

/** The decay of the `updates`-th update (1-based). */
export function emaDecay(config: EmaConfig, updates: number): number {
  return config.warmupUpdates === 0 ? config.decay : config.decay * (1 - Math.exp(-updates / config.warmupUpdates));
}

/**
 * `average = d * average + (1 - d) * value`, in place. Each element is computed in double precision and rounded
 * once to float32, so the same inputs give the same bits on every run (a resumed run stays bit-identical).
 */
export function accumulateAverage(average: Float32Array, value: Float32Array, d: number): void {
  if (average.length !== value.length) throw new AppError(Code.INTERNAL, `EMA of ${average.length} values fed ${value.length}`);
  const rest = 1 - d;
  for (let i = 0; i < average.length; i++) average[i] = d * (average[i] as number) + rest * (value[i] as number);
}
