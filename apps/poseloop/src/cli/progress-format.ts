import type { JobProgress } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";

/** "45s", "12m04s", "3h02m", "2d05h": two units at most, as a glance at an ETA needs. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  const pad = (n: number): string => String(n).padStart(2, "0");
  if (s < 3600) return `${Math.floor(s / 60)}m${pad(s % 60)}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h${pad(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86_400)}d${pad(Math.floor((s % 86_400) / 3600))}h`;
}

/** A loss: heatmap MSE losses live around 1e-3, so small values get an exponent instead of zeros. */
export function formatLoss(loss: number): string {
  if (!Number.isFinite(loss)) return String(loss);
  if (loss === 0) return "0";
  return Math.abs(loss) < 0.01 ? loss.toExponential(3) : loss.toPrecision(4);
}

/** A learning rate: "1.00e-3", or "0.100" from 0.01 up. */
export function formatLearningRate(lr: number): string {
  if (!Number.isFinite(lr)) return String(lr);
  if (lr === 0) return "0";
  return Math.abs(lr) < 0.01 ? lr.toExponential(2) : lr.toPrecision(3);
}

/** Samples (or frames) per second: one decimal below 100, none above. */
export function formatRate(rate: number): string {
  if (!Number.isFinite(rate)) return "?";
  return rate < 100 ? rate.toFixed(1) : rate.toFixed(0);
}

/** "epoch 3/20": the epoch in progress, counted from 1 (the proto counts from 0). */
function epochText(progress: JobProgress): string {
  return progress.endEpoch > 0 ? `epoch ${progress.epoch + 1}/${progress.endEpoch}` : `epoch ${progress.epoch + 1}`;
}

function stepText(progress: JobProgress): string {
  return progress.stepsPerEpoch > 0 ? `step ${progress.stepInEpoch}/${progress.stepsPerEpoch}` : `step ${progress.step}`;
}

/** A plain progress line for logs and pipes: every number, no redrawing. */
export function formatProgressLine(progress: JobProgress): string {
  const parts = [
    epochText(progress),
    stepText(progress),
    `loss ${formatLoss(progress.loss)}`,
    `lr ${formatLearningRate(progress.lr)}`,
    `${formatRate(progress.samplesPerSecond)} samples/s`,
  ];
  if (progress.gradNorm > 0) parts.push(`grad-norm ${progress.gradNorm.toPrecision(3)}`);
  if (progress.lossScale > 0) parts.push(`loss-scale ${progress.lossScale}`);
  parts.push(`ETA ${formatDuration(progress.etaSeconds)}`);
  return parts.join("  ");
}

/**
 * The live progress bar of a terminal, fitted to `columns`: the bar shows the epoch's steps and shrinks
 * (down to nothing) before any number is cut.
 */
export function formatProgressBar(progress: JobProgress, columns: number): string {
  const head = epochText(progress);
  const tail = [
    progress.stepsPerEpoch > 0 ? `${progress.stepInEpoch}/${progress.stepsPerEpoch}` : `step ${progress.step}`,
    `loss ${formatLoss(progress.loss)}`,
    `lr ${formatLearningRate(progress.lr)}`,
    `${formatRate(progress.samplesPerSecond)} samples/s`,
    `ETA ${formatDuration(progress.etaSeconds)}`,
  ].join("  ");
  const room = columns - 1 - head.length - tail.length - 4;
  if (progress.stepsPerEpoch === 0 || room < 5) return `${head}  ${tail}`;
  const width = Math.min(30, room);
  const fraction = Math.min(1, progress.stepInEpoch / progress.stepsPerEpoch);
  const filled = Math.round(fraction * width);
  return `${head} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${tail}`;
}
