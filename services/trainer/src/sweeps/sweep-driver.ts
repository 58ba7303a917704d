import { clone, equals } from "@bufbuild/protobuf";
import { timestampDate, timestampFromMs, timestampNow } from "@bufbuild/protobuf/wkt";
import { AppError, Code, sleep, type Logger } from "@poseloop/core";
import type { TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { JobState, SweepSchema, SweepState, TrialState, type Job, type JobEvent, type Sweep, type SweepTrial } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { resolveTrialConfigsOffThread } from "./sweep-check.js";
import { resolveStopping, stopDecision, type TrialCurve } from "./early-stopping.js";
import { isSweepOver, type SweepStore } from "./sweep-store.js";

/** The labels every trial's job carries, so `poseloop jobs` and ListJobs show which sweep it belongs to. */
export const SWEEP_ID_LABEL = "poseloop.sweep_id";
export const SWEEP_TRIAL_LABEL = "poseloop.sweep_trial";

/** What the driver needs of the job side: StartTraining's and CancelJob's paths, and the job records. */
export interface TrialJobs {
  /**
   * Queues the trial's job through StartTraining's path with its resolved experiment, as the sweep's submitter
   * (idempotent per trial).
   */
  start(sweep: Sweep, trial: SweepTrial, config: TrainConfig): Promise<Job>;
  /** CancelJob for the trial's job; a job that already ended is left as it is. */
  cancel(sweep: Sweep, jobId: string, reason: string): Promise<void>;
  get(jobId: string): Promise<Job | undefined>;
  events(jobId: string, after: bigint): Promise<JobEvent[]>;
}

export interface SweepDriverOptions {
  readonly store: SweepStore;
  readonly workerId: string;
  readonly logger: Logger;
  /** How long a driver's claim on a sweep holds without renewal before another trainer takes it (default 10 s). */
  readonly leaseMs?: number;
  /** How often the driver looks at its sweeps (default 1 s). */
  readonly tickMs?: number;
}

const ENDED_JOB = new Set([JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED]);

const msOf = (t: Sweep["driverLeaseUntil"]): number => (t === undefined ? 0 : timestampDate(t).getTime());

/**
 * Drives the sweeps of the bus: every trainer runs one, and each running sweep is driven by one of them at a
 * time (a lease in the sweep's record, renewed every few ticks). A pass reads the stage's trials' jobs and
 * their new validation events, records each trial's AP per epoch, stops the hopeless ones (cancelling their
 * jobs), and when the stage's jobs have all ended fixes its best values and queues the next stage. Everything
 * a pass needs is in the sweep's record and the jobs' records and events, so a trainer that takes over a
 * sweep whose driver died carries on where it was (trial jobs are queued under per-trial idempotency keys,
 * so a pass repeated after a crash queues nothing twice).
 */
export class SweepDriver {
  readonly #store: SweepStore;
  readonly #workerId: string;
  readonly #logger: Logger;
  readonly #leaseMs: number;
  readonly #tickMs: number;
  #jobs: TrialJobs | undefined;
  #wake: (() => void) | undefined;
  /** Sweeps a pass of this trainer is on now: StartSweep's first pass and the loop's must not overlap. */
  readonly #driving = new Set<string>();

  constructor(options: SweepDriverOptions) {
    this.#store = options.store;
    this.#workerId = options.workerId;
    this.#logger = options.logger;
    this.#leaseMs = options.leaseMs ?? 10_000;
    this.#tickMs = options.tickMs ?? 1000;
  }

  get workerId(): string {
    return this.#workerId;
  }

  get leaseMs(): number {
    return this.#leaseMs;
  }

  /** Given by the TrainerService, whose StartTraining and CancelJob queue and cancel the trials. */
  attach(jobs: TrialJobs): void {
    this.#jobs = jobs;
  }

  /** Looks at the sweeps now instead of at the next tick. */
  kick(): void {
    this.#wake?.();
  }

  /** Drives sweeps until `signal` aborts, then gives up its claims so that another trainer takes over at once. */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      try {
        for (const sweep of await this.#store.list()) {
          if (signal.aborted) break;
          if (!isSweepOver(sweep.state)) await this.drive(sweep.sweepId);
        }
      } catch (error) {
        if (signal.aborted) break;
        this.#logger.warn("driving sweeps failed; the next pass tries again", { err: error });
      }
      const wake = new AbortController();
      this.#wake = () => wake.abort();
      await sleep(this.#tickMs, AbortSignal.any([signal, wake.signal])).catch(() => undefined);
      this.#wake = undefined;
    }
    await this.#release().catch((error: unknown) => this.#logger.warn("giving up this trainer's sweeps failed; their leases expire instead", { err: error }));
  }

  async #release(): Promise<void> {
    for (const sweep of await this.#store.list()) {
      if (sweep.driver !== this.#workerId || isSweepOver(sweep.state)) continue;
      await this.#store.update(sweep.sweepId, (s) => {
        if (s.driver !== this.#workerId) return false;
        s.driverLeaseUntil = timestampNow();
      });
    }
  }

  /** One pass over a sweep, when no other trainer holds it (nor another pass of this one). */
  async drive(sweepId: string): Promise<void> {
    const jobs = this.#jobs;
    if (jobs === undefined || this.#driving.has(sweepId)) return;
    this.#driving.add(sweepId);
    try {
      await this.#pass(sweepId, jobs);
    } finally {
      this.#driving.delete(sweepId);
    }
  }

  async #pass(sweepId: string, jobs: TrialJobs): Promise<void> {
    const found = await this.#store.get(sweepId);
    if (found === undefined || isSweepOver(found.sweep.state)) return;
    const { sweep } = found;
    let { revision } = found;
    const now = Date.now();
    if (sweep.driver !== this.#workerId && msOf(sweep.driverLeaseUntil) > now) return;
    if (sweep.driver !== this.#workerId) {
      // Claimed before any work, so that two trainers finding an expired lease do not both act on it.
      const previous = sweep.driver;
      sweep.driver = this.#workerId;
      sweep.driverLeaseUntil = timestampFromMs(now + this.#leaseMs);
      try {
        revision = await this.#store.replace(sweep, revision);
      } catch (error) {
        if (AppError.is(error, Code.ABORTED)) return;
        throw error;
      }
      if (previous !== "") this.#logger.info("took over a sweep whose driver stopped", { sweep_id: sweepId, previous_driver: previous });
    }
    let saved = clone(SweepSchema, sweep);
    /** Writes what the pass did so far and renews the claim; false when another write came first. */
    const save = async (): Promise<boolean> => {
      const renew = msOf(sweep.driverLeaseUntil) - Date.now() < this.#leaseMs / 2;
      if (equals(SweepSchema, sweep, saved) && !renew) return true;
      sweep.driverLeaseUntil = timestampFromMs(Date.now() + this.#leaseMs);
      try {
        revision = await this.#store.replace(sweep, revision);
        saved = clone(SweepSchema, sweep);
        return true;
      } catch (error) {
        // A CancelSweep (or a takeover after a stall) wrote meanwhile: the next pass starts from its record.
        if (AppError.is(error, Code.ABORTED)) return false;
        throw error;
      }
    };
    await this.#advance(sweep, jobs, save);
    await save();
  }

  async #advance(sweep: Sweep, jobs: TrialJobs, save: () => Promise<boolean>): Promise<void> {
    const { rule } = resolveStopping(sweep.request?.earlyStopping);
    for (let guard = 0; guard <= sweep.stages.length && sweep.state === SweepState.RUNNING; guard++) {
      const stage = sweep.currentStage;
      const trials = sweep.trials.filter((t) => t.stage === stage);
      const pending = trials.filter((t) => t.jobId === "" && t.state === TrialState.PENDING);
      if (pending.length > 0) {
        // One worker resolves the stage's experiments (YAML is CPU-bound), checked again now that the earlier
        // stages' best values are known; a combination that does not validate ends the sweep with its problems.
        const request = sweep.request;
        const { configs, problems } = await resolveTrialConfigsOffThread(
          request?.experimentYaml ?? "",
          pending.map((t) => ({ ...request?.overrides, ...sweep.fixed, ...t.values })),
        );
        const refused = pending.flatMap((t, i) => (problems[i] ?? []).map((p) => `trial ${t.index}: ${p}`));
        if (refused.length > 0) {
          await this.#fail(sweep, jobs, `stage ${stage + 1} could not start: ${refused.join("; ")}`);
          return;
        }
        for (const [i, trial] of pending.entries()) {
          const config = configs[i];
          if (config === undefined) continue;
          trial.fixed = { ...sweep.fixed };
          try {
            trial.jobId = (await jobs.start(sweep, trial, config)).jobId;
            trial.state = TrialState.RUNNING;
          } catch (error) {
            const app = AppError.from(error);
            // A trial that cannot be queued for a reason a retry cannot fix ends the sweep, with the why.
            if (!AppError.is(app, Code.INVALID_ARGUMENT, Code.FAILED_PRECONDITION, Code.NOT_FOUND, Code.PERMISSION_DENIED)) throw error;
            await this.#fail(sweep, jobs, `trial ${trial.index} could not be queued: ${app.message}`);
            return;
          }
        }
        // The job ids are recorded at once: a pass that dies later does not leave them to be found again.
        if (!(await save())) return;
      }
      const ended = new Set<number>();
      for (const trial of trials) {
        if (trial.jobId === "") continue;
        if (trial.state !== TrialState.RUNNING && trial.state !== TrialState.STOPPED_EARLY) {
          ended.add(trial.index);
          continue;
        }
        // The record before the events: a job that has ended wrote all its events before its final record.
        const job = await jobs.get(trial.jobId);
        if (job === undefined) continue;
        const events = await jobs.events(trial.jobId, trial.eventsRead);
        const newEpochs: number[] = [];
        for (const event of events) {
          trial.eventsRead = event.sequence > trial.eventsRead ? event.sequence : trial.eventsRead;
          if (event.event.case === "validation") {
            const { epoch, metrics } = event.event.value;
            if (trial.epochs.includes(epoch)) continue;
            trial.epochs.push(epoch);
            trial.aps.push(metrics?.ap ?? 0);
            newEpochs.push(epoch);
            if (trial.epochs.length === 1 || (metrics?.ap ?? 0) > trial.bestAp) {
              trial.bestAp = metrics?.ap ?? 0;
              trial.bestEpoch = epoch;
            }
          }
          if (event.event.case === "checkpointSaved") trial.epochsRun = Math.max(trial.epochsRun, event.event.value.checkpoint?.epoch ?? 0);
        }
        trial.epochsRun = Math.max(trial.epochsRun, job.lastCheckpoint?.epoch ?? 0, ...trial.epochs);
        const endEpoch = job.config?.endEpoch ?? 0;
        if (trial.state === TrialState.RUNNING && !ENDED_JOB.has(job.state)) {
          const others: TrialCurve[] = trials.filter((t) => t.index !== trial.index);
          // The median rule judges a trial's latest epoch again as the others catch up with it; ASHA judges
          // each rung once, when the trial reaches it.
          const latest = trial.epochs.at(-1);
          const judged = rule.rule === "median" ? (latest === undefined ? [] : [latest]) : newEpochs;
          for (const epoch of judged) {
            const reason = stopDecision(rule, trial, epoch, others, endEpoch);
            if (reason === undefined) continue;
            trial.state = TrialState.STOPPED_EARLY;
            trial.stopReason = reason;
            this.#logger.info("stopping a sweep trial early", { sweep_id: sweep.sweepId, trial: trial.index, job_id: trial.jobId, reason });
            await jobs.cancel(sweep, trial.jobId, `sweep ${sweep.sweepId}: ${reason}`);
            break;
          }
        }
        if (ENDED_JOB.has(job.state)) {
          ended.add(trial.index);
          if (trial.state === TrialState.RUNNING) {
            trial.state = job.state === JobState.SUCCEEDED ? TrialState.SUCCEEDED : job.state === JobState.FAILED ? TrialState.FAILED : TrialState.CANCELLED;
            if (job.state === JobState.FAILED) trial.stopReason = job.error?.message ?? "the job failed";
          }
        }
      }
      sweep.bestTrial = bestOf(sweep.trials)?.index ?? -1;
      if (ended.size < trials.length) return;
      const best = bestOf(trials);
      if (best === undefined) {
        await this.#fail(sweep, jobs, `no trial of stage ${stage + 1} (${sweep.stages[stage]?.name ?? ""}) reported a validation AP`);
        return;
      }
      sweep.fixed = { ...sweep.fixed, ...best.values };
      if (stage + 1 >= sweep.stages.length) {
        sweep.state = SweepState.SUCCEEDED;
        sweep.finishedAt = timestampNow();
        this.#logger.info("sweep finished", { sweep_id: sweep.sweepId, best_trial: best.index, best_ap: best.bestAp });
        return;
      }
      // The next stage's trials are queued in this same pass.
      sweep.currentStage = stage + 1;
    }
  }

  async #fail(sweep: Sweep, jobs: TrialJobs, message: string): Promise<void> {
    sweep.state = SweepState.FAILED;
    sweep.message = message;
    sweep.finishedAt = timestampNow();
    await cancelTrials(sweep, jobs, `sweep ${sweep.sweepId} failed`);
    this.#logger.warn("sweep failed", { sweep_id: sweep.sweepId, reason: message });
  }
}

/** Cancels the trials still pending or running (their jobs with CancelJob's semantics). */
export async function cancelTrials(sweep: Sweep, jobs: TrialJobs, reason: string): Promise<void> {
  for (const trial of sweep.trials) {
    if (trial.state !== TrialState.PENDING && trial.state !== TrialState.RUNNING) continue;
    if (trial.jobId !== "") await jobs.cancel(sweep, trial.jobId, reason);
    trial.state = TrialState.CANCELLED;
  }
}

/** The trial with the highest best AP among those that reported one. */
export function bestOf(trials: readonly SweepTrial[]): SweepTrial | undefined {
  let best: SweepTrial | undefined;
  for (const trial of trials) if (trial.aps.length > 0 && (best === undefined || trial.bestAp > best.bestAp)) best = trial;
  return best;
}
