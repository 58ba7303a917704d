import { AppError, Code, sleep } from "@poseloop/core";
import { CheckpointReason, JobEventSchema, JobSchema, JobState, type Job, type JobEvent } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { LiveLine } from "./cli-io.js";
import type { CommandContext } from "./command.js";
import { ExitCode } from "./error-report.js";
import { formatEvent, formatJobSummary, isFinalState, jobStateName } from "./job-format.js";
import { protoJson, writeJsonLine } from "./json-output.js";
import { formatProgressBar, formatProgressLine } from "./progress-format.js";

/** Watches that end without an event while the job is still running, in a row, before giving up. */
const MAX_IDLE_REWATCHES = 3;
const REWATCH_DELAY_MS = 1000;

export interface FollowOptions {
  afterSequence?: bigint;
  skipProgress?: boolean;
}

/**
 * Follows a job until it ends: a live progress bar (one kept per finished epoch) and event lines on a
 * terminal, plain lines otherwise, all on stderr; then the outcome on stdout, the one result: state, best
 * validation AP and publications. With --json, stdout gets JSON lines instead ({"type":"event"} per event,
 * then {"type":"finished"} with the job). Exit code 0 only when the job succeeded; Ctrl-C stops following
 * (the job goes on) with 130.
 */
export async function followJob(ctx: CommandContext, jobId: string, options: FollowOptions = {}): Promise<number> {
  const trainer = ctx.trainer();
  const log = ctx.err;
  const live = new LiveLine(log);
  // The epoch the bar on screen belongs to; undefined when there is none (or it was kept).
  let barEpoch: number | undefined;
  let after = options.afterSequence ?? 0n;
  let idleRounds = 0;
  let job: Job;
  try {
    for (;;) {
      let received = 0;
      const events = trainer.watchJob(jobId, {
        signal: ctx.signal,
        afterSequence: after,
        ...(options.skipProgress === undefined ? {} : { skipProgress: options.skipProgress }),
      });
      for await (const event of events) {
        received++;
        after = event.sequence;
        if (ctx.json) {
          writeJsonLine(ctx.out, { type: "event", event: protoJson(JobEventSchema, event) });
        } else if (event.event.case === "progress") {
          const progress = event.event.value;
          if (!log.isTTY) {
            log.line(formatProgressLine(progress));
            continue;
          }
          // A new epoch's first report: the last epoch's bar stays, as its record.
          if (barEpoch !== undefined && progress.epoch !== barEpoch) live.keep();
          barEpoch = progress.epoch;
          live.update(formatProgressBar(progress, log.columns));
        } else {
          // Validation and the epoch-end checkpoint close the epoch: keep its bar above their lines.
          if (endsEpoch(event)) {
            live.keep();
            barEpoch = undefined;
          }
          const text = formatEvent(event);
          if (text !== undefined) live.print(text);
        }
      }
      job = await trainer.getJob(jobId, { signal: ctx.signal });
      // A watch ends with its job, or when a trainer drains for a restart: then watch on from the last event.
      idleRounds = received > 0 ? 0 : idleRounds + 1;
      if (isFinalState(job.state) || idleRounds >= MAX_IDLE_REWATCHES) break;
      await sleep(REWATCH_DELAY_MS, ctx.signal);
    }
  } catch (error) {
    live.clear();
    if (ctx.signal.aborted && AppError.is(error, Code.CANCELLED)) {
      ctx.err.line(`poseloop: stopped following job ${jobId}; it goes on (poseloop watch ${jobId} follows it again)`);
      return ExitCode.INTERRUPTED;
    }
    throw error;
  }
  // The watch ended with the job: its last bar shows where it stopped.
  live.keep();

  if (ctx.json) writeJsonLine(ctx.out, { type: "finished", job: protoJson(JobSchema, job) });
  else ctx.out.lines(formatJobSummary(job));
  switch (job.state) {
    case JobState.SUCCEEDED:
      return ExitCode.OK;
    case JobState.FAILED:
      ctx.err.line(`poseloop: job ${jobId} failed${job.error === undefined || job.error.message === "" ? "" : `: ${job.error.message}`}`);
      return ExitCode.FAILURE;
    case JobState.CANCELLED:
      ctx.err.line(`poseloop: job ${jobId} was cancelled (poseloop train --resume ${jobId} continues it)`);
      return ExitCode.FAILURE;
    default:
      if (!isFinalState(job.state)) {
        ctx.err.line(`poseloop: the trainer ended the watch while job ${jobId} is ${jobStateName(job.state)} (poseloop watch ${jobId} follows it again)`);
      }
      return ExitCode.FAILURE;
  }
}

function endsEpoch(event: JobEvent): boolean {
  const e = event.event;
  return e.case === "validation" || (e.case === "checkpointSaved" && e.value.checkpoint?.reason === CheckpointReason.EPOCH_END);
}
