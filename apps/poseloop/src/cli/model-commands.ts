import { TimestampSchema, type Timestamp } from "@bufbuild/protobuf/wkt";
import { AppError, Code } from "@poseloop/core";
import { ModelRefSchema, type ModelRef } from "@poseloop/proto/poseloop/common/v1/model_pb";
import {
  GetServingModelResponseSchema,
  ServingEventKind,
  ServingState,
  WatchServingModelResponseSchema,
  type GetServingModelResponse,
  type WatchServingModelResponse,
} from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { PublishCheckpointResponseSchema, type Job, type PublishCheckpointResponse } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import type { Command, CommandContext } from "./command.js";
import { ExitCode, UsageError } from "./error-report.js";
import { formatTable, jobStateName, manifestText, modelRefText, timestampText } from "./job-format.js";
import { protoJson, writeJsonDocument, writeJsonLine } from "./json-output.js";

/** "job/checkpoint", or --job and --checkpoint: never both, never half. */
export function publishTarget(positional: string | undefined, job: string | undefined, checkpoint: string | undefined): { jobId: string; checkpointId: string } {
  if (positional !== undefined) {
    if (job !== undefined || checkpoint !== undefined) throw new UsageError("give JOB/CHECKPOINT or --job and --checkpoint, not both", "publish");
    const slash = positional.indexOf("/");
    const jobId = slash < 0 ? "" : positional.slice(0, slash).trim();
    const checkpointId = slash < 0 ? "" : positional.slice(slash + 1).trim();
    if (jobId === "" || checkpointId === "") throw new UsageError(`"${positional}" is not JOB/CHECKPOINT`, "publish");
    return { jobId, checkpointId };
  }
  if (job === undefined || checkpoint === undefined || job.trim() === "" || checkpoint.trim() === "") {
    throw new UsageError("name the checkpoint: poseloop publish JOB/CHECKPOINT (or --job JOB --checkpoint CHECKPOINT)", "publish");
  }
  return { jobId: job.trim(), checkpointId: checkpoint.trim() };
}

function servingChangeText(response: PublishCheckpointResponse): string {
  const previous = response.previous === undefined || response.previous.version === "" ? "" : ` (before: ${modelRefText(response.previous)})`;
  return `serving ${manifestText(response.serving)}${previous}`;
}

/**
 * PublishCheckpoint exports the checkpoint and runs the int8 gate (a validation pass) before it answers:
 * minutes for a real model. The trainer goes on when the caller gives up, so the 30 s default deadline
 * would report a failure for a publication that then happens; --timeout still sets one.
 */
const PUBLISH_TIMEOUT_MS = 30 * 60_000;

export const publishCommand: Command = {
  name: "publish",
  summary: "Publish a checkpoint as a new model version, and make it serve.",
  synopsis: "<job>/<checkpoint> | --job JOB --checkpoint CHECKPOINT",
  description: [
    "The trainer exports the checkpoint and runs the int8 gate before it answers, which takes minutes for a",
    "large model: the deadline is 30 minutes unless --timeout sets another.",
  ].join("\n"),
  positionals: { min: 0, max: 1 },
  examples: ["poseloop publish <job-id>/<checkpoint-id>", "poseloop publish --job <job-id> --checkpoint <checkpoint-id> --skip-promotion"],
  options: {
    job: { type: "string", value: "JOB", help: "the job" },
    checkpoint: { type: "string", value: "CHECKPOINT", help: "the checkpoint id (poseloop checkpoints JOB lists them)" },
    model: { type: "string", value: "NAME", help: "publish under this model name (default: the job's)" },
    "skip-promotion": { type: "boolean", help: "upload and announce without making it serve" },
    reason: { type: "string", value: "TEXT", help: "why (kept in the registry's history)" },
  },
  async run(ctx) {
    const target = publishTarget(ctx.args.positionals[0], ctx.args.string("job"), ctx.args.string("checkpoint"));
    const modelName = ctx.args.string("model");
    const reason = ctx.args.string("reason");
    const response = await ctx.trainer().publishCheckpoint({
      ...target,
      skipPromotion: ctx.args.flag("skip-promotion"),
      signal: ctx.signal,
      ...(ctx.args.has("timeout") ? {} : { timeoutMs: PUBLISH_TIMEOUT_MS }),
      ...(modelName === undefined ? {} : { modelName }),
      ...(reason === undefined ? {} : { reason }),
    });
    if (ctx.json) writeJsonDocument(ctx.out, protoJson(PublishCheckpointResponseSchema, response));
    else {
      const promoted = ctx.args.flag("skip-promotion") ? "published (not promoted); " : "published; ";
      ctx.out.line(`${target.jobId}/${target.checkpointId} ${promoted}${servingChangeText(response)}`);
    }
    return ExitCode.OK;
  },
};

export const rollbackCommand: Command = {
  name: "rollback",
  summary: "Make the previous version of a model serve again (or, with --to, any published version).",
  synopsis: "<model> [--to VERSION] [--reason TEXT]",
  positionals: { min: 1, max: 1 },
  examples: ["poseloop rollback demo", "poseloop rollback demo --to <version> --reason 'AP dropped on night footage'"],
  options: {
    to: { type: "string", value: "VERSION", help: "make this published version serve" },
    reason: { type: "string", value: "TEXT", help: "why (kept in the registry's history)" },
  },
  async run(ctx) {
    const model = ctx.args.positionals[0]?.trim() ?? "";
    if (model === "") throw new UsageError("the model name is empty", "rollback");
    const to = ctx.args.string("to");
    const reason = ctx.args.string("reason");
    const options = { signal: ctx.signal, ...(reason === undefined ? {} : { reason }) };
    const response =
      to === undefined ? await ctx.trainer().rollback(model, options) : await ctx.trainer().setServingVersion({ name: model, version: to }, options);
    if (ctx.json) writeJsonDocument(ctx.out, protoJson(PublishCheckpointResponseSchema, response));
    else ctx.out.line(`${model}: ${servingChangeText(response)}`);
    return ExitCode.OK;
  },
};

export const promoteCommand: Command = {
  name: "promote",
  summary: "Make a published version of a model serve now, over its promotion policy (admin role).",
  synopsis: "<model> <version> [--reason TEXT]",
  description: [
    "A manual override: the version serves whatever the model's policy (poseloop policy MODEL) would decide,",
    "as with 'poseloop rollback MODEL --to VERSION', and the decision log (poseloop promotions MODEL) keeps it.",
  ].join("\n"),
  positionals: { min: 2, max: 2 },
  examples: ["poseloop promote demo <version>", "poseloop promote demo <version> --reason 'better on night footage, checked by hand'"],
  options: {
    reason: { type: "string", value: "TEXT", help: "why (kept in the registry's history and decision log)" },
  },
  async run(ctx) {
    const model = ctx.args.positionals[0]?.trim() ?? "";
    const version = ctx.args.positionals[1]?.trim() ?? "";
    if (model === "" || version === "") throw new UsageError("give the model name and the version to promote", "promote");
    const reason = ctx.args.string("reason");
    const response = await ctx.trainer().setServingVersion({ name: model, version }, { signal: ctx.signal, ...(reason === undefined ? {} : { reason }) });
    if (ctx.json) writeJsonDocument(ctx.out, protoJson(PublishCheckpointResponseSchema, response));
    else ctx.out.line(`${model}: ${servingChangeText(response)}`);
    return ExitCode.OK;
  },
};

export const modelsCommand: Command = {
  name: "models",
  summary: "Show the serving model version and its history (inferencer and trainer).",
  synopsis: "[model] [--watch]",
  description: [
    "The inferencer tells which version serves, since when, and what it served before; the trainer's jobs",
    "tell which versions were published, and their event logs when. When the trainer cannot be reached, only",
    "the inferencer's part is shown (with a note on stderr). --watch follows loads, swaps and failed loads",
    "until Ctrl-C.",
  ].join("\n"),
  examples: ["poseloop models", "poseloop models demo --watch"],
  positionals: { min: 0, max: 1 },
  options: {
    watch: { type: "boolean", help: "follow serving changes (loads, swaps, failed loads) until Ctrl-C" },
    jobs: { type: "string", value: "N", help: "look for published versions in the newest N jobs (default 100)" },
  },
  async run(ctx) {
    const model = ctx.args.positionals[0]?.trim() ?? "";
    if (ctx.args.flag("watch")) return watchServing(ctx, model);
    const serving = await ctx.inference().getServingModel(model, { signal: ctx.signal });
    const name = model !== "" ? model : (serving.manifest?.model?.name ?? "");
    const published = await publishedVersions(ctx, name, ctx.args.int("jobs", 1, 500) ?? 100, serving);
    if (ctx.json) {
      writeJsonDocument(ctx.out, {
        serving: protoJson(GetServingModelResponseSchema, serving),
        published: published.versions.map(({ job, version, publishedAt }) => ({
          jobId: job.jobId,
          jobState: jobStateName(job.state),
          model: protoJson(ModelRefSchema, version),
          ...(publishedAt === undefined ? {} : { publishedAt: protoJson(TimestampSchema, publishedAt) }),
        })),
        ...(published.error === undefined ? {} : { trainerError: published.error }),
      });
      return ExitCode.OK;
    }
    ctx.out.lines(servingLines(ctx, name, serving));
    if (published.error !== undefined) {
      ctx.err.line(`poseloop: note: published versions not shown: ${published.error}`);
    } else if (published.versions.length === 0) {
      ctx.out.line(`published: no version of ${name === "" ? "this model" : name} in the trainer's newest jobs`);
    } else {
      ctx.out.line("published (newest job first):");
      const rows = published.versions.map(({ job, version, publishedAt }) => [modelRefText(version), job.jobId, jobStateName(job.state), timestampText(publishedAt)]);
      ctx.out.lines(formatTable(["VERSION", "JOB", "STATE", "PUBLISHED"], rows).map((line) => `  ${line}`));
    }
    return ExitCode.OK;
  },
};

function servingLines(ctx: CommandContext, name: string, serving: GetServingModelResponse): string[] {
  const inferencer = ctx.inference().address;
  const lines = [`model ${name === "" ? "(default)" : name} on the inferencer at ${inferencer}: ${servingStateName(serving.state)}`];
  const manifest = serving.manifest;
  if (manifest !== undefined) {
    lines.push(`  version     ${manifestText(manifest)}`);
    if (serving.loadedAt !== undefined) lines.push(`  loaded      ${timestampText(serving.loadedAt)}`);
    if (manifest.trainingJobId !== "") lines.push(`  trained by  job ${manifest.trainingJobId} (epoch ${manifest.epoch}, step ${manifest.step})`);
    if (manifest.parentVersion !== "") lines.push(`  fine-tuned from ${manifest.parentVersion}`);
    const quantization = manifest.quantization;
    if (quantization !== undefined && quantization.calibrator !== "") {
      lines.push(`  int8        ${quantization.calibrator} calibration, AP drop ${quantization.apDrop.toFixed(2)} points (limit ${quantization.maxApDrop})`);
    }
  }
  // After a rollback the version serving again is among the earlier ones too; it is not "before".
  const before = serving.previous.filter((ref) => !sameVersion(ref, manifest?.model));
  lines.push(`  served before on this inferencer: ${before.length === 0 ? "nothing" : before.map(modelRefText).join(", ")}`);
  return lines;
}

export function servingStateName(state: ServingState): string {
  return ServingState[state] ?? `STATE_${state}`;
}

function sameVersion(a: ModelRef | undefined, b: ModelRef | undefined): boolean {
  return a !== undefined && b !== undefined && a.name === b.name && a.version === b.version;
}

interface PublishedVersion {
  readonly job: Job;
  readonly version: ModelRef;
  /** When it was stored in the registry; undefined when the job's event log did not tell. */
  readonly publishedAt?: Timestamp;
}

/** Published versions of `name` from the trainer's newest jobs, or why they could not be listed. */
async function publishedVersions(
  ctx: CommandContext,
  name: string,
  jobs: number,
  serving: GetServingModelResponse,
): Promise<{ versions: PublishedVersion[]; error?: string }> {
  try {
    const response = await ctx.trainer().listJobs({ pageSize: jobs, signal: ctx.signal });
    const versions = response.jobs.flatMap((job) =>
      job.published.filter((ref) => name === "" || ref.name === name).reverse().map((version) => ({ job, version })),
    );
    const times = await publicationTimes(ctx, versions);
    // The serving version's manifest has its time too, should its job's log not.
    const servingRef = serving.manifest?.model;
    const servingTime = serving.manifest?.createdAt;
    if (servingRef !== undefined && servingTime !== undefined && !times.has(versionKey(servingRef))) times.set(versionKey(servingRef), servingTime);
    return {
      versions: versions.map((entry) => {
        const publishedAt = times.get(versionKey(entry.version));
        return publishedAt === undefined ? entry : { ...entry, publishedAt };
      }),
    };
  } catch (error) {
    // The serving state is the answer the user asked for; the trainer's list only adds to it.
    if (AppError.is(error, Code.UNAVAILABLE, Code.UNIMPLEMENTED, Code.DEADLINE_EXCEEDED, Code.PERMISSION_DENIED, Code.UNAUTHENTICATED)) {
      return { versions: [], error: error.message };
    }
    throw error;
  }
}

/** A job's event log is a few hundred events without progress: read in well under this. */
const PUBLICATION_LOOKUP_TIMEOUT_MS = 10_000;
/** Event logs read at once. */
const PUBLICATION_LOOKUP_CONCURRENCY = 4;

function versionKey(ref: Pick<ModelRef, "name" | "version">): string {
  return `${ref.name}@${ref.version}`;
}

/**
 * When each version was published. A job names its versions only; their time is in its event log: the
 * manifest of each `published` event, whose created_at the registry set when it stored the version. One
 * watch per job, without progress, ended once all of the job's versions are found (the watch of a running
 * job would otherwise wait for its next event). A log that cannot be read leaves its versions without a time.
 */
async function publicationTimes(ctx: CommandContext, versions: readonly { job: Job; version: ModelRef }[]): Promise<Map<string, Timestamp>> {
  const wanted = new Map<string, Set<string>>();
  for (const { job, version } of versions) {
    const keys = wanted.get(job.jobId) ?? new Set<string>();
    keys.add(versionKey(version));
    wanted.set(job.jobId, keys);
  }
  const times = new Map<string, Timestamp>();
  const readLog = async (jobId: string, keys: Set<string>): Promise<void> => {
    try {
      const events = ctx.trainer().watchJob(jobId, { signal: ctx.signal, skipProgress: true, timeoutMs: PUBLICATION_LOOKUP_TIMEOUT_MS, reconnect: { attempts: 0 } });
      for await (const event of events) {
        if (event.event.case !== "published") continue;
        const manifest = event.event.value.manifest;
        const key = versionKey(manifest?.model ?? { name: "", version: "" });
        const time = manifest?.createdAt ?? event.time;
        if (keys.delete(key) && time !== undefined) times.set(key, time);
        if (keys.size === 0) break;
      }
    } catch (error) {
      if (ctx.signal.aborted || !(error instanceof AppError)) throw error;
    }
  };
  const logs = [...wanted];
  for (let i = 0; i < logs.length; i += PUBLICATION_LOOKUP_CONCURRENCY) {
    await Promise.all(logs.slice(i, i + PUBLICATION_LOOKUP_CONCURRENCY).map(([jobId, keys]) => readLog(jobId, keys)));
  }
  return times;
}

function servingEventText(event: WatchServingModelResponse): string {
  const time = timestampText(event.time);
  const candidate = modelRefText(event.candidate);
  const serving = manifestText(event.serving);
  switch (event.kind) {
    case ServingEventKind.SNAPSHOT:
      return `${time} ${servingStateName(event.state)}: serving ${serving}`;
    case ServingEventKind.LOADING:
      return `${time} loading ${candidate} (serving ${serving} meanwhile)`;
    case ServingEventKind.SWAPPED:
      return `${time} swapped: serving ${serving}`;
    case ServingEventKind.LOAD_FAILED:
      return `${time} load of ${candidate} FAILED${event.error === undefined ? "" : `: ${event.error.message}`}; still serving ${serving}`;
    case ServingEventKind.DRAINED:
      return `${time} ${candidate} drained and released`;
    default:
      return `${time} ${servingStateName(event.state)}: serving ${serving}`;
  }
}

async function watchServing(ctx: CommandContext, model: string): Promise<number> {
  try {
    for await (const event of ctx.inference().watchServingModel(model, { signal: ctx.signal })) {
      if (ctx.json) writeJsonLine(ctx.out, protoJson(WatchServingModelResponseSchema, event));
      else ctx.out.line(servingEventText(event));
    }
  } catch (error) {
    // Ctrl-C is how a watch ends.
    if (ctx.signal.aborted && AppError.is(error, Code.CANCELLED)) return ExitCode.OK;
    throw error;
  }
  return ExitCode.OK;
}
