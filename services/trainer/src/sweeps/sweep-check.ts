import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { AppError, Code, startModuleWorker, WorkerClient } from "@poseloop/core";
import { StartSweepRequestSchema, type StartSweepRequest } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { TrainConfigSchema, type TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { checkExperiment, EXPERIMENT_LIMITS, withDatasetProblems } from "../experiment/experiment.js";
import { resolveStopping } from "./early-stopping.js";
import { expandStage, planStages, type StagePlan } from "./sweep-plan.js";

/** A trial as planned: its stage and its swept values. */
export interface PlannedTrial {
  readonly stage: number;
  readonly values: Readonly<Record<string, string>>;
}

export interface CheckedSweep {
  readonly stages: StagePlan[];
  readonly trials: PlannedTrial[];
  readonly problems: string[];
  /** The experiment with the request's overrides, resolved (undefined when it has problems). */
  readonly base?: TrainConfig;
}

const describeValues = (values: Readonly<Record<string, string>>): string =>
  Object.entries(values)
    .map(([key, value]) => `${key}=${value}`)
    .join(", ");

/**
 * Plans a sweep and builds every trial's experiment through the validator StartTraining uses (the request's
 * overrides, then the trial's values; a later stage's trial with the earlier stages' keys as the experiment
 * has them), collecting every problem: the experiment's own once, then each trial's with its index and values.
 * CPU-bound (YAML once per trial): runs in a worker thread (sweep-check-worker.ts).
 */
export function checkSweep(request: StartSweepRequest): CheckedSweep {
  const problems: string[] = [];
  const base = checkExperiment(request.experimentYaml, request.overrides);
  problems.push(...base.problems.map((p) => `experiment: ${p}`));
  const baseConfig = base.config !== undefined && base.problems.length === 0 ? base.config : undefined;
  const plan = planStages(request, baseConfig === undefined ? undefined : { lr: baseConfig.optimizer?.lr ?? 0, batchSize: baseConfig.batchSize });
  problems.push(...plan.problems, ...resolveStopping(request.earlyStopping).problems);
  // A key with an empty range (reported above) would leave a stage no trial: the others' values are still checked.
  const expandable = plan.stages.map((stage) => ({ ...stage, parameters: stage.parameters.filter((p) => p.values.length > 0) }));
  const trials: PlannedTrial[] = expandable.flatMap((stage, s) => expandStage(stage, request.search, request.trials, request.seed, s).map((values) => ({ stage: s, values })));
  // A broken experiment fails every trial the same way: its problems are listed once, above, and each trial's
  // own problems (a bad value) after them.
  const shared = new Set(base.problems);
  trials.forEach((trial, index) => {
    const checked = checkExperiment(request.experimentYaml, { ...request.overrides, ...trial.values });
    problems.push(...checked.problems.filter((p) => !shared.has(p)).map((p) => `trial ${index} (${describeValues(trial.values)}): ${p}`));
  });
  return { stages: plan.stages, trials, problems, ...(baseConfig === undefined ? {} : { base: baseConfig }) };
}

/**
 * Each trial's experiment (the request's overrides, the earlier stages' best values, the trial's own), resolved
 * as StartTraining resolves a file: the configs a stage's jobs are queued with, or the problems by trial.
 */
export function resolveTrialConfigs(yaml: string, overrides: readonly Readonly<Record<string, string>>[]): { configs: (TrainConfig | undefined)[]; problems: string[][] } {
  const checked = overrides.map((o) => checkExperiment(yaml, o));
  return { configs: checked.map((c) => (c.problems.length === 0 ? c.config : undefined)), problems: checked.map((c) => c.problems) };
}

/** resolveTrialConfigs in a worker thread: one worker for a whole stage, not one per trial. */
export async function resolveTrialConfigsOffThread(yaml: string, overrides: readonly Readonly<Record<string, string>>[]): Promise<{ configs: (TrainConfig | undefined)[]; problems: string[][] }> {
  const client = new WorkerClient(startModuleWorker(import.meta.url, "./sweep-check-worker", { name: "poseloop-sweep-check" }));
  try {
    await within(client.call("ready"), STARTUP_MS, "the sweep checker did not start");
    const resolved = await within(client.call<{ configs: (Uint8Array | undefined)[]; problems: string[][] }>("configs", { yaml, overrides }), CHECK_MS, `resolving a stage's trials took longer than ${CHECK_MS / 1000} s`);
    return { configs: resolved.configs.map((bytes) => (bytes === undefined ? undefined : fromBinary(TrainConfigSchema, bytes))), problems: resolved.problems };
  } finally {
    await client.terminate();
  }
}

const STARTUP_MS = 60_000;
const CHECK_MS = 30_000;

/**
 * checkSweep in a worker thread of its own (YAML's cost grows faster than the text, and a sweep parses it once
 * per trial), then the dataset's files, which are I/O, here.
 */
export async function checkSweepOffThread(request: StartSweepRequest, dataRoot: string): Promise<CheckedSweep> {
  if (Buffer.byteLength(request.experimentYaml, "utf8") > EXPERIMENT_LIMITS.maxBytes) {
    return { stages: [], trials: [], problems: [`the experiment file is ${Buffer.byteLength(request.experimentYaml, "utf8")} bytes; the limit is ${EXPERIMENT_LIMITS.maxBytes} bytes (256 KiB)`] };
  }
  const client = new WorkerClient(startModuleWorker(import.meta.url, "./sweep-check-worker", { name: "poseloop-sweep-check" }));
  let checked: { stages: StagePlan[]; trials: PlannedTrial[]; problems: string[]; base?: Uint8Array };
  try {
    await within(client.call("ready"), STARTUP_MS, "the sweep checker did not start");
    checked = await within(client.call("check", { request: toBinary(StartSweepRequestSchema, request) }), CHECK_MS, `checking the sweep took longer than ${CHECK_MS / 1000} s`);
  } finally {
    await client.terminate();
  }
  const base = checked.base === undefined ? undefined : fromBinary(TrainConfigSchema, checked.base);
  const withData = await withDatasetProblems({ config: base, problems: [] }, dataRoot);
  return { stages: checked.stages, trials: checked.trials, problems: [...checked.problems, ...withData.problems.map((p) => `experiment: ${p}`)], ...(base === undefined ? {} : { base }) };
}

async function within<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new AppError(Code.UNAVAILABLE, message)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}
