import {
  CancelJobResponseSchema,
  JobState,
  ListCheckpointsResponseSchema,
  ListJobsResponseSchema,
} from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { create } from "@bufbuild/protobuf";
import type { Command, CommandContext } from "./command.js";
import { ExitCode, UsageError } from "./error-report.js";
import { followJob } from "./job-follow.js";
import { CHECKPOINT_TABLE_HEADER, checkpointRow, formatTable, JOB_TABLE_HEADER, jobRow, jobStateName } from "./job-format.js";
import { protoJson, writeJsonDocument } from "./json-output.js";

const STATE_NAMES = ["queued", "running", "cancelling", "cancelled", "succeeded", "failed"] as const;

/** "running,queued" → [RUNNING, QUEUED]; a usage error names the states that exist. */
export function parseStates(raw: readonly string[]): JobState[] {
  const states: JobState[] = [];
  for (const name of raw.flatMap((item) => item.split(",")).map((item) => item.trim().toLowerCase()).filter((item) => item !== "")) {
    const state = JobState[name.toUpperCase() as keyof typeof JobState] as JobState | undefined;
    if (state === undefined || !(STATE_NAMES as readonly string[]).includes(name)) {
      throw new UsageError(`unknown job state "${name}" (one of ${STATE_NAMES.join(", ")})`, "jobs");
    }
    states.push(state);
  }
  return states;
}

export const jobsCommand: Command = {
  name: "jobs",
  summary: "List training jobs, newest first.",
  synopsis: "[--state STATE[,STATE]] [--limit N] [--page-token TOKEN]",
  positionals: { min: 0, max: 0 },
  examples: ["poseloop jobs --state running,queued", "poseloop jobs --json | jq -r '.jobs[].jobId'"],
  options: {
    state: { type: "string", multiple: true, value: "STATE", help: `only jobs in these states (${STATE_NAMES.join(", ")})` },
    limit: { type: "string", value: "N", help: "at most N jobs (default 50, at most 500)" },
    "page-token": { type: "string", value: "TOKEN", help: "continue a previous listing" },
  },
  async run(ctx) {
    const limit = ctx.args.int("limit", 1, 500);
    const pageToken = ctx.args.string("page-token");
    const response = await ctx.trainer().listJobs({
      states: parseStates(ctx.args.strings("state")),
      signal: ctx.signal,
      ...(limit === undefined ? {} : { pageSize: limit }),
      ...(pageToken === undefined ? {} : { pageToken }),
    });
    if (ctx.json) {
      writeJsonDocument(ctx.out, protoJson(ListJobsResponseSchema, response));
      return ExitCode.OK;
    }
    // Only the table goes to stdout, so that `poseloop jobs | tail -n +2` sees jobs and nothing else; saying
    // there are none, or that there are more, is a message.
    if (response.jobs.length === 0) ctx.err.line("no jobs");
    else ctx.out.lines(formatTable(JOB_TABLE_HEADER, response.jobs.map(jobRow)));
    if (response.nextPageToken !== "") ctx.err.line(`more: poseloop jobs --page-token ${response.nextPageToken}`);
    return ExitCode.OK;
  },
};

export const watchCommand: Command = {
  name: "watch",
  summary: "Follow a job's progress and events until it ends.",
  synopsis: "<job> [--after N] [--skip-progress]",
  positionals: { min: 1, max: 1 },
  options: {
    after: { type: "string", value: "N", help: "replay only events after sequence number N" },
    "skip-progress": { type: "boolean", help: "leave out progress reports (validation, checkpoints, state changes only)" },
  },
  async run(ctx) {
    const after = ctx.args.int("after", 0);
    return followJob(ctx, jobArgument(ctx), {
      skipProgress: ctx.args.flag("skip-progress"),
      ...(after === undefined ? {} : { afterSequence: BigInt(after) }),
    });
  },
};

export const cancelCommand: Command = {
  name: "cancel",
  summary: "Cancel a job; it stops at the next step boundary and keeps its last checkpoint.",
  synopsis: "<job> [--reason TEXT]",
  positionals: { min: 1, max: 1 },
  options: { reason: { type: "string", value: "TEXT", help: "why (kept with the job)" } },
  async run(ctx) {
    const reason = ctx.args.string("reason");
    const job = await ctx.trainer().cancelJob(jobArgument(ctx), { signal: ctx.signal, ...(reason === undefined ? {} : { reason }) });
    if (ctx.json) {
      writeJsonDocument(ctx.out, protoJson(CancelJobResponseSchema, create(CancelJobResponseSchema, { job })));
      return ExitCode.OK;
    }
    const note = job.state === JobState.CANCELLING ? " (stops at the next step boundary)" : "";
    ctx.out.line(`job ${job.jobId} ${jobStateName(job.state).toLowerCase()}${note}`);
    return ExitCode.OK;
  },
};

export const checkpointsCommand: Command = {
  name: "checkpoints",
  summary: "List a job's checkpoints, oldest first.",
  synopsis: "<job>",
  positionals: { min: 1, max: 1 },
  options: {},
  async run(ctx) {
    const jobId = jobArgument(ctx);
    const checkpoints = await ctx.trainer().listCheckpoints(jobId, { signal: ctx.signal });
    if (ctx.json) {
      writeJsonDocument(ctx.out, protoJson(ListCheckpointsResponseSchema, create(ListCheckpointsResponseSchema, { checkpoints })));
      return ExitCode.OK;
    }
    if (checkpoints.length === 0) ctx.err.line(`job ${jobId} has no checkpoints yet`);
    else ctx.out.lines(formatTable(CHECKPOINT_TABLE_HEADER, checkpoints.map(checkpointRow)));
    return ExitCode.OK;
  },
};

function jobArgument(ctx: CommandContext): string {
  const jobId = ctx.args.positionals[0]?.trim() ?? "";
  if (jobId === "") throw new UsageError("the job id is empty", ctx.args.command);
  return jobId;
}
