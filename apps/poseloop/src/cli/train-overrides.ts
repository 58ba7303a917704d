import { parseInteger, parseKeyValue, parseNumber } from "./command.js";
import { UsageError } from "./error-report.js";

/** The flags of `poseloop train` that are shorthands for experiment-file keys. */
export const TRAIN_FLAG_KEYS = {
  lr: "TRAIN.LR",
  "batch-size": "TRAIN.BATCH_SIZE_PER_GPU",
  "grad-accum": "TRAIN.GRAD_ACCUM_STEPS",
  "clip-grad": "TRAIN.CLIP_GRAD",
  epochs: "TRAIN.END_EPOCH",
} as const;

export type TrainFlag = keyof typeof TRAIN_FLAG_KEYS;

/** The values of the shorthand flags as typed, and every --set KEY=VALUE. */
export interface TrainOverrideInput {
  readonly flags: Partial<Readonly<Record<TrainFlag, string>>>;
  readonly sets: readonly string[];
}

/**
 * The overrides map sent with StartTraining: each shorthand flag checked (a learning rate above zero, whole
 * positive batch sizes...) and mapped to its experiment-file key, then --set pairs as given. A key given
 * twice is a usage error rather than a silent winner. Values keep the user's spelling ("5e-4" stays
 * "5e-4"); the trainer parses and validates them with the rest of the experiment.
 */
export function trainOverrides(input: TrainOverrideInput, command = "train"): Record<string, string> {
  const overrides: Record<string, string> = {};
  const origin = new Map<string, string>();
  const put = (key: string, value: string, from: string): void => {
    const previous = origin.get(key);
    if (previous !== undefined) throw new UsageError(`${key} is given twice (${previous} and ${from})`, command);
    origin.set(key, from);
    overrides[key] = value;
  };
  const checks: Record<TrainFlag, (raw: string, what: string) => void> = {
    lr: (raw, what) => void parseNumber(raw, what, command, { min: 0, minExclusive: true }),
    "batch-size": (raw, what) => void parseInteger(raw, what, command, 1),
    "grad-accum": (raw, what) => void parseInteger(raw, what, command, 1),
    "clip-grad": (raw, what) => void parseNumber(raw, what, command, { min: 0 }),
    epochs: (raw, what) => void parseInteger(raw, what, command, 1),
  };
  for (const flag of Object.keys(TRAIN_FLAG_KEYS) as TrainFlag[]) {
    const raw = input.flags[flag];
    if (raw === undefined) continue;
    checks[flag](raw, `--${flag}`);
    put(TRAIN_FLAG_KEYS[flag], raw.trim(), `--${flag}`);
  }
  for (const pair of input.sets) {
    const [key, value] = parseKeyValue(pair, "--set", command);
    put(key, value, `--set ${key}`);
  }
  return overrides;
}
