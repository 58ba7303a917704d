import { SweepSearch, type StartSweepRequest } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";

/** The most trials one sweep may queue, all stages together: a typo in a range should not flood the queue. */
export const MAX_SWEEP_TRIALS = 64;

/** A swept key and its values, as override values are written. */
export interface ParameterPlan {
  readonly key: string;
  readonly values: readonly string[];
}

export interface StagePlan {
  readonly name: string;
  readonly parameters: readonly ParameterPlan[];
}

/** What a stage's defaults are computed from: the experiment as written, overrides applied. */
export interface BaseValues {
  readonly lr: number;
  readonly batchSize: number;
}

/** The named stages of the practitioner's order, with the keys each one tunes. */
export const STAGE_NAMES = ["lr", "batch", "aug"] as const;

/** Three significant digits, the way a person writes a learning rate ("0.0003", not "0.00030000000000000003"). */
const written = (value: number): string => String(Number(value.toPrecision(3)));

/**
 * The parameters of a named stage when the request gives none: the learning rate first (0.3x, 1x, 3x the
 * experiment's, the spread a first search brackets), then the batch size (halved, as is, doubled), then the
 * augmentation strength the reference recipe tunes (rotation 0/20/40 degrees, scale ±15%/±35%).
 */
export function defaultStageParameters(name: string, base: BaseValues): ParameterPlan[] | undefined {
  switch (name) {
    case "lr":
      return [{ key: "TRAIN.LR", values: [0.3, 1, 3].map((f) => written(base.lr * f)) }];
    case "batch":
      return [{ key: "TRAIN.BATCH_SIZE_PER_GPU", values: [...new Set([Math.max(1, Math.round(base.batchSize / 2)), base.batchSize, base.batchSize * 2])].map(String) }];
    case "aug":
      return [
        { key: "DATASET.ROT_FACTOR", values: ["0", "20", "40"] },
        { key: "DATASET.SCALE_FACTOR", values: ["0.15", "0.35"] },
      ];
    default:
      return undefined;
  }
}

/**
 * The request's stages with their parameters (a plain sweep is one stage named "sweep"), and every problem
 * with their shape: no parameters, an empty range, a key swept twice or both swept and overridden, a stage
 * name without defaults and without parameters, random search without a trial count or with more trials than
 * combinations, too many trials. The keys and values themselves are checked by building each trial's
 * experiment (checkSweepTrials).
 */
export function planStages(request: StartSweepRequest, base: BaseValues | undefined): { stages: StagePlan[]; problems: string[] } {
  const problems: string[] = [];
  const given: { name: string; parameters: ParameterPlan[] }[] =
    request.stages.length > 0 ? request.stages.map((s) => ({ name: s.name, parameters: s.parameters.map((p) => ({ key: p.key, values: p.values })) })) : [{ name: "sweep", parameters: request.parameters.map((p) => ({ key: p.key, values: p.values })) }];
  if (request.stages.length > 0 && request.parameters.length > 0) problems.push("parameters: give the swept keys in the stages, not both");
  const stages: StagePlan[] = [];
  const swept = new Map<string, string>();
  given.forEach((stage, s) => {
    const where = request.stages.length > 0 ? `stage ${s + 1} (${stage.name || "unnamed"})` : "the sweep";
    let parameters = stage.parameters;
    if (parameters.length === 0 && request.stages.length === 0) {
      problems.push("the sweep has no parameters: name at least one key and its values");
    } else if (parameters.length === 0) {
      // Without a valid experiment there is no base to compute defaults from; its problems are reported instead.
      const defaults = base === undefined ? [] : defaultStageParameters(stage.name, base);
      if (defaults === undefined) problems.push(`${where}: has no parameters, and only the stages ${STAGE_NAMES.join(", ")} have defaults`);
      parameters = defaults ?? [];
    }
    for (const parameter of parameters) {
      if (parameter.key.trim() === "") problems.push(`${where}: a parameter has no key`);
      if (parameter.values.length === 0) problems.push(`${where}: ${parameter.key}: the range is empty (give at least one value)`);
      parameter.values.forEach((value, i) => {
        if (value.trim() === "") problems.push(`${where}: ${parameter.key}: value ${i + 1} is empty`);
      });
      if (new Set(parameter.values).size !== parameter.values.length) problems.push(`${where}: ${parameter.key}: a value is given twice`);
      const earlier = swept.get(parameter.key);
      if (earlier !== undefined) problems.push(`${where}: ${parameter.key} is already swept by ${earlier}`);
      swept.set(parameter.key, where);
      if (Object.hasOwn(request.overrides, parameter.key)) problems.push(`${where}: ${parameter.key} is swept and also fixed by an override`);
    }
    stages.push({ name: stage.name || `stage-${s + 1}`, parameters });
  });
  const sizes = stages.map(gridSize);
  if (request.search === SweepSearch.RANDOM) {
    if (request.trials === 0) problems.push("trials: random search needs a number of trials per stage");
    sizes.forEach((size, s) => {
      if (request.trials > size && size > 0) problems.push(`trials: ${request.trials} exceeds the ${size} combinations of stage ${s + 1}`);
    });
  } else if (request.trials !== 0) {
    problems.push("trials: only random search takes a number of trials (grid search runs every combination)");
  }
  const total = sizes.reduce((sum, size) => sum + (request.search === SweepSearch.RANDOM ? Math.min(request.trials, size) : size), 0);
  if (total > MAX_SWEEP_TRIALS) problems.push(`the sweep has ${total} trials; the limit is ${MAX_SWEEP_TRIALS}`);
  return { stages, problems };
}

function gridSize(stage: StagePlan): number {
  return stage.parameters.length === 0 ? 0 : stage.parameters.reduce((product, p) => product * p.values.length, 1);
}

/** The combination at `index` of the stage's grid, the last parameter varying fastest. */
function combinationAt(stage: StagePlan, index: number): Record<string, string> {
  const values: Record<string, string> = {};
  let rest = index;
  for (let p = stage.parameters.length - 1; p >= 0; p--) {
    const parameter = stage.parameters[p];
    if (parameter === undefined) continue;
    values[parameter.key] = parameter.values[rest % parameter.values.length] ?? "";
    rest = Math.floor(rest / parameter.values.length);
  }
  // Keys in the order the stage names them.
  return Object.fromEntries(stage.parameters.map((p) => [p.key, values[p.key] ?? ""]));
}

/** mulberry32: a small seeded generator, so a random sweep's trials are the same on every trainer. */
function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A stage's trials: every combination (grid), or `trials` distinct ones drawn with `seed` (random), in grid
 * order either way so that a table of them reads like the grid.
 */
export function expandStage(stage: StagePlan, search: SweepSearch, trials: number, seed: bigint, stageIndex: number): Record<string, string>[] {
  const size = gridSize(stage);
  if (search !== SweepSearch.RANDOM || trials >= size) return Array.from({ length: size }, (_, i) => combinationAt(stage, i));
  const random = seededRandom(Number(BigInt.asUintN(32, seed)) ^ Math.imul(stageIndex + 1, 0x9e3779b1));
  const chosen = new Set<number>();
  while (chosen.size < trials) chosen.add(Math.floor(random() * size));
  return [...chosen].sort((a, b) => a - b).map((i) => combinationAt(stage, i));
}
