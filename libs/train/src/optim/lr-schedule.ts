export type ScheduleKind = "constant" | "multistep" | "cosine";

export interface LrScheduleConfig {
  readonly kind: ScheduleKind;
  /** Base learning rate. */
  readonly lr: number;
  /** multistep: epochs at which the rate is multiplied by `factor` (TRAIN.LR_STEP, TRAIN.LR_FACTOR). */
  readonly steps?: readonly number[];
  readonly factor?: number;
  /** cosine: the floor reached at the end. */
  readonly minLr?: number;
  /** Linear warm-up over this many optimizer steps, from lr·warmupStartFactor (mmpose's LinearLR). */
  readonly warmupSteps?: number;
  readonly warmupStartFactor?: number;
}

/**
 * The learning rate at an optimizer step, with epoch-based decay as the references schedule it
 * (MultiStepLR / CosineAnnealingLR stepped per epoch) and warm-up per step on top.
 * `epoch` is the 0-based epoch the step belongs to; `totalEpochs` the run's length (cosine).
 */
export function learningRate(config: LrScheduleConfig, epoch: number, step: number, totalEpochs: number): number {
  let lr = config.lr;
  switch (config.kind) {
    case "constant":
      break;
    case "multistep":
      for (const milestone of config.steps ?? []) if (epoch >= milestone) lr *= config.factor ?? 0.1;
      break;
    case "cosine": {
      const min = config.minLr ?? 0;
      const progress = totalEpochs <= 0 ? 1 : Math.min(1, epoch / totalEpochs);
      lr = min + ((config.lr - min) * (1 + Math.cos(Math.PI * progress))) / 2;
      break;
    }
  }
  const warmup = config.warmupSteps ?? 0;
  if (warmup > 0 && step < warmup) {
    const start = config.warmupStartFactor ?? 0.001;
    lr *= start + ((1 - start) * step) / warmup;
  }
  return lr;
}

/** Problems with a schedule (empty when valid). */
export function scheduleProblems(config: LrScheduleConfig): string[] {
  const problems: string[] = [];
  if (!(config.lr > 0) || !Number.isFinite(config.lr)) problems.push(`learning rate must be positive, got ${config.lr}`);
  const steps = config.steps ?? [];
  for (let i = 1; i < steps.length; i++) {
    if ((steps[i] as number) <= (steps[i - 1] as number)) problems.push(`LR steps must be strictly increasing, got [${steps.join(", ")}]`);
  }
  if (config.factor !== undefined && !(config.factor > 0 && config.factor <= 1)) problems.push(`LR factor must be in (0, 1], got ${config.factor}`);
  if ((config.warmupSteps ?? 0) < 0) problems.push("warm-up steps must not be negative");
  return problems;
}
