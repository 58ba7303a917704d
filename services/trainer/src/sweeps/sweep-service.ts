import { create } from "@bufbuild/protobuf";
import { timestampFromMs, timestampNow } from "@bufbuild/protobuf/wkt";
import { AppError, Code, type Logger } from "@poseloop/core";
import {
  SweepSchema,
  SweepState,
  TrialState,
  type CancelSweepRequest,
  type GetSweepRequest,
  type StartSweepRequest,
  type Sweep,
  type WatchSweepRequest,
} from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { checkSweepOffThread } from "./sweep-check.js";
import { renderSweepPlots } from "./sweep-plots.js";
import { cancelTrials, type SweepDriver, type TrialJobs } from "./sweep-driver.js";
import { isSweepOver, newSweepId, type SweepStore } from "./sweep-store.js";

export interface SweepServiceDependencies {
  readonly store: SweepStore;
  readonly driver: SweepDriver;
  readonly jobs: TrialJobs;
  readonly dataRoot: string;
  readonly logger: Logger;
}

/** The sweep RPCs of TrainerService (the service checks the caller's role and the labels before these). */
export interface SweepHandlers {
  start(request: StartSweepRequest, submittedBy: string, extraProblems: readonly string[]): Promise<{ sweep: Sweep }>;
  get(request: GetSweepRequest): Promise<{ sweep: Sweep; plots: { name: string; png: Uint8Array }[] }>;
  list(): Promise<{ sweeps: Sweep[] }>;
  watch(request: WatchSweepRequest, signal: AbortSignal): AsyncGenerator<{ sweep: Sweep }>;
  cancel(request: CancelSweepRequest, mayChange: (sweep: Sweep) => void): Promise<{ sweep: Sweep }>;
}

export function sweepHandlers(deps: SweepServiceDependencies): SweepHandlers {
  const { store, driver } = deps;
  return {
    async start(request, submittedBy, extraProblems) {
      const checked = await checkSweepOffThread(request, deps.dataRoot);
      const problems = [...checked.problems, ...extraProblems];
      // Nothing is recorded or queued unless every trial's experiment is valid.
      if (problems.length > 0) throw AppError.invalid("sweep", problems);
      const now = timestampNow();
      const sweep = create(SweepSchema, {
        sweepId: newSweepId(),
        name: request.name || checked.base?.name || "sweep",
        state: SweepState.RUNNING,
        request,
        stages: checked.stages.map((stage) => ({ name: stage.name, parameters: stage.parameters.map((p) => ({ key: p.key, values: [...p.values] })) })),
        trials: checked.trials.map((trial, index) => ({ index, stage: trial.stage, values: { ...trial.values }, state: TrialState.PENDING })),
        bestTrial: -1,
        createdAt: now,
        updatedAt: now,
        submittedBy,
        // Claimed by the trainer that accepted it, which queues the first stage before answering.
        driver: driver.workerId,
        driverLeaseUntil: timestampFromMs(Date.now() + driver.leaseMs),
      });
      await store.create(sweep);
      deps.logger.info("sweep started", { sweep_id: sweep.sweepId, trials: sweep.trials.length, stages: sweep.stages.map((s) => s.name).join(","), submitted_by: submittedBy });
      try {
        await driver.drive(sweep.sweepId);
      } catch (error) {
        // The sweep is recorded: any trainer's next pass queues what this one could not.
        deps.logger.warn("queueing a new sweep's first trials failed; the next pass tries again", { sweep_id: sweep.sweepId, err: error })
      }
      return { sweep: await store.require(sweep.sweepId) };
    },

    async get(request) {
      const sweep = await store.require(request.sweepId);
      return { sweep, plots: request.includePlots ? await renderSweepPlots(sweep) : [] };
    },

    async list() {
      return { sweeps: await store.list() };
    },

    async *watch(request, signal) {
      await store.require(request.sweepId);
      for await (const sweep of store.watch(request.sweepId, signal)) yield { sweep };
    },

    async cancel(request, mayChange) {
      let cancelled: Sweep | undefined;
      const sweep = await store.update(request.sweepId, (s) => {
        mayChange(s);
        if (isSweepOver(s.state)) throw new AppError(Code.FAILED_PRECONDITION, `sweep ${s.sweepId} already ended (${SweepState[s.state]})`);
        s.state = SweepState.CANCELLED;
        s.message = request.reason === "" ? "cancel requested" : `cancel requested: ${request.reason}`;
        s.finishedAt = timestampNow();
        cancelled = s;
      });
      if (cancelled !== undefined) {
        // The record says cancelled first, so that no driver queues another trial; then the jobs stop.
        const reason = `sweep ${sweep.sweepId} cancelled`;
        await cancelTrials(sweep, deps.jobs, reason);
        return { sweep: await store.update(sweep.sweepId, (s) => {
          for (const trial of s.trials) if (trial.state === TrialState.PENDING || trial.state === TrialState.RUNNING) trial.state = TrialState.CANCELLED;
        }) };
      }
      return { sweep };
    },
  };
}
