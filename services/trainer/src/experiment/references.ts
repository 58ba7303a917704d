import { AppError, Code } from "@poseloop/core";
import type { TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";

// The shapes the trainer and the registry issue. A reference becomes a KV key, an object name or a path
// segment once a job runs, so anything else ("../../etc") is refused at submission, not found at run time.
const JOB_ID = /^job-[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$/;
const CHECKPOINT_ID = /^e[0-9]{4,}-s[0-9]{7,}(-b[0-9]{5,})?$/;
const VERSION = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

const quoted = (value: string): string => JSON.stringify(value.length > 80 ? `${value.slice(0, 77)}...` : value);

export function jobIdProblems(jobId: string): string[] {
  return JOB_ID.test(jobId) ? [] : [`${quoted(jobId)} is not a job id (job-YYYYMMDD-HHMMSS-xxxxxx)`];
}

export function checkpointIdProblems(checkpointId: string): string[] {
  return CHECKPOINT_ID.test(checkpointId) ? [] : [`${quoted(checkpointId)} is not a checkpoint id (e<epoch>-s<step>, as ListCheckpoints shows them)`];
}

/** An empty version means "the serving one" and is fine. */
export function versionProblems(version: string): string[] {
  return version === "" || (VERSION.test(version) && !version.includes("..")) ? [] : [`${quoted(version)} is not a model version (1-128 letters, digits, '.', '-' or '_')`];
}

/** What a submission looks up to tell whether the things a config names exist. */
export interface ReferenceLookups {
  /** Whether the job exists. */
  hasJob(jobId: string): Promise<boolean>;
  /** The ids of the checkpoints the job keeps. */
  checkpointIds(jobId: string): Promise<readonly string[]>;
  /** Whether the model has this version; with version "", whether it has a serving version. */
  hasModelVersion(name: string, version: string): Promise<boolean>;
}

/**
 * Problems with what a syntactically valid config refers to: the checkpoint or model version INIT_FROM starts
 * from and DISTILL's teacher. Each is NOT_FOUND when missing; the caller raises them together (a job that
 * would only fail, or be redelivered, at its first step is refused now). Lookup failures other than "not
 * found" (the bus is down) propagate.
 */
export async function referenceProblems(config: TrainConfig, lookups: ReferenceLookups): Promise<string[]> {
  const problems: string[] = [];
  const source = config.initFrom?.source;
  if (source?.case === "checkpoint") {
    const { jobId, checkpointId } = source.value;
    if (!(await lookups.hasJob(jobId))) problems.push(`INIT_FROM.JOB_ID: no job ${jobId}`);
    else if (!(await lookups.checkpointIds(jobId)).includes(checkpointId)) problems.push(`INIT_FROM.CHECKPOINT_ID: job ${jobId} keeps no checkpoint ${checkpointId}`);
  } else if (source?.case === "model") {
    const { name, version } = source.value;
    if (!(await lookups.hasModelVersion(name, version))) problems.push(version === "" ? `INIT_FROM.MODEL: model ${name} has no serving version` : `INIT_FROM.VERSION: model ${name} has no version ${version}`);
  }
  const teacher = config.distillation?.teacher;
  if (teacher !== undefined && teacher.name !== "") {
    if (!(await lookups.hasModelVersion(teacher.name, teacher.version))) {
      problems.push(teacher.version === "" ? `DISTILL.TEACHER_MODEL: model ${teacher.name} has no serving version` : `DISTILL.TEACHER_VERSION: model ${teacher.name} has no version ${teacher.version}`);
    }
  }
  return problems;
}

/** NOT_FOUND listing every missing reference. */
export function missingReferences(problems: readonly string[]): AppError {
  return new AppError(Code.NOT_FOUND, `the training config refers to what does not exist (${problems.length === 1 ? "1 problem" : `${problems.length} problems`}): ${problems.join("; ")}`, { problems });
}
