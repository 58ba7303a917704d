import { EarlyStopRule, SweepSearch } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { parseKeyValue, parseNumber } from "./command.js";
import { UsageError } from "./error-report.js";

/** The shorthand flags of `poseloop sweep` and the experiment keys they sweep (and the stage they belong to). */
export const SWEEP_FLAG_KEYS = {
  lr: { key: "TRAIN.LR", stage: "lr" },
  batch: { key: "TRAIN.BATCH_SIZE_PER_GPU", stage: "batch" },
  "rot-factor": { key: "DATASET.ROT_FACTOR", stage: "aug" },
  "scale-factor": { key: "DATASET.SCALE_FACTOR", stage: "aug" },
} as const;

export type SweepFlag = keyof typeof SWEEP_FLAG_KEYS;

export interface SweepInput {
  readonly flags: Partial<Readonly<Record<SweepFlag, string>>>;
  /** Every --set KEY=V1,V2,...: several values sweep the key, one fixes it. */
  readonly sets: readonly string[];
  readonly search?: string;
  readonly trials?: number;
  readonly seed?: number;
  readonly earlyStop?: string;
  readonly grace?: number;
  readonly eta?: number;
  readonly stages?: string;
}

export interface SweepParameterInit {
  key: string;
  values: string[];
}

export interface SweepRequestInit {
  overrides: Record<string, string>;
  parameters: SweepParameterInit[];
  stages: { name: string; parameters: SweepParameterInit[] }[];
  search: SweepSearch;
  trials: number;
  seed: bigint;
  earlyStopping: { rule: EarlyStopRule; graceEpochs: number; reductionFactor: number };
}

/** "1e-4,3e-4,[1,2]" → ["1e-4", "3e-4", "[1,2]"]: commas inside brackets belong to a list value. */
export function splitValues(raw: string): string[] {
  const values: string[] = [];
  let depth = 0;
  let current = "";
  for (const ch of raw) {
    if (ch === "[") depth++;
    if (ch === "]") depth = Math.max(0, depth - 1);
    if (ch === "," && depth === 0) {
      values.push(current.trim());
      current = "";
    } else {
      current += ch;
    }
  }
  values.push(current.trim());
  return values;
}

const STAGE_NAMES = ["lr", "batch", "aug"] as const;

/**
 * The StartSweep request from the command line. Values keep the user's spelling; the trainer validates every
 * trial's experiment and lists every problem. What the command line alone gets wrong (a key given twice, an
 * empty value list, a stage name that does not exist, a key swept outside --stages' stages) is a usage error.
 */
export function sweepRequest(input: SweepInput, command = "sweep"): SweepRequestInit {
  const overrides: Record<string, string> = {};
  const swept: { key: string; values: string[]; stage: string | undefined; from: string }[] = [];
  const seen = new Map<string, string>();
  const note = (key: string, from: string): void => {
    const previous = seen.get(key);
    if (previous !== undefined) throw new UsageError(`${key} is given twice (${previous} and ${from})`, command);
    seen.set(key, from);
  };
  for (const flag of Object.keys(SWEEP_FLAG_KEYS) as SweepFlag[]) {
    const raw = input.flags[flag];
    if (raw === undefined) continue;
    const { key, stage } = SWEEP_FLAG_KEYS[flag];
    const values = splitValues(raw);
    if (values.some((v) => v === "")) throw new UsageError(`--${flag} takes a comma-separated list of values, got "${raw}"`, command);
    values.forEach((v) => void parseNumber(v, `--${flag}`, command, { min: 0, minExclusive: flag === "lr" || flag === "batch" }));
    note(key, `--${flag}`);
    swept.push({ key, values, stage, from: `--${flag}` });
  }
  for (const pair of input.sets) {
    const [key, raw] = parseKeyValue(pair, "--set", command);
    const values = splitValues(raw);
    if (values.some((v) => v === "")) throw new UsageError(`--set ${key} has an empty value in "${raw}"`, command);
    note(key, `--set ${key}`);
    if (values.length === 1) overrides[key] = values[0] ?? "";
    else swept.push({ key, values, stage: undefined, from: `--set ${key}` });
  }
  const search = input.search ?? "grid";
  if (search !== "grid" && search !== "random") throw new UsageError(`--search must be grid or random, got "${search}"`, command);
  if (search === "random" && input.trials === undefined) throw new UsageError("--search random needs --trials N (trials per stage)", command);
  if (search === "grid" && input.trials !== undefined) throw new UsageError("--trials applies to --search random (grid search runs every combination)", command);
  const earlyStop = input.earlyStop ?? "none";
  const rule = { none: EarlyStopRule.NONE, median: EarlyStopRule.MEDIAN, asha: EarlyStopRule.ASHA }[earlyStop];
  if (rule === undefined) throw new UsageError(`--early-stop must be none, median or asha, got "${earlyStop}"`, command);

  const request: SweepRequestInit = {
    overrides,
    parameters: [],
    stages: [],
    search: search === "random" ? SweepSearch.RANDOM : SweepSearch.GRID,
    trials: input.trials ?? 0,
    seed: BigInt(input.seed ?? 0),
    earlyStopping: { rule, graceEpochs: input.grace ?? 0, reductionFactor: input.eta ?? 0 },
  };
  if (input.stages === undefined) {
    if (swept.length === 0) throw new UsageError("nothing to sweep: give values with --lr, --batch, --rot-factor, --scale-factor or --set KEY=V1,V2 (or --stages)", command);
    request.parameters = swept.map(({ key, values }) => ({ key, values }));
    return request;
  }
  const names = input.stages.split(",").map((s) => s.trim());
  for (const name of names) {
    if (!(STAGE_NAMES as readonly string[]).includes(name)) throw new UsageError(`--stages takes stages from ${STAGE_NAMES.join(", ")}, got "${name}"`, command);
  }
  if (new Set(names).size !== names.length) throw new UsageError(`--stages names a stage twice: "${input.stages}"`, command);
  for (const parameter of swept) {
    if (parameter.stage === undefined || !names.includes(parameter.stage)) {
      throw new UsageError(`${parameter.from} sweeps a key outside the stages ${names.join(",")}; with --stages, sweep with the flags of those stages`, command);
    }
  }
  // A stage whose flags give no values takes the trainer's defaults for it.
  request.stages = names.map((name) => ({ name, parameters: swept.filter((p) => p.stage === name).map(({ key, values }) => ({ key, values })) }));
  return request;
}
