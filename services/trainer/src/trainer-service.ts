import { create, fromBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { trace } from "@opentelemetry/api";
import type { JobQueue, ModelRegistry } from "@poseloop/bus";
import { AppError, Code, type Logger } from "@poseloop/core";
import { Role, type HandlerContext, type MethodsOf, type ServiceImpl } from "@poseloop/grpc";
import { ModelRefSchema, type ModelManifest, type ModelRef } from "@poseloop/proto/poseloop/common/v1/model_pb";
import type { TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import {
  GetJobResultsResponseSchema,
  JobSchema,
  JobState,
  StartTrainingRequestSchema,
  type CancelJobRequest,
  type EvaluateRequest,
  type EvaluateResponseSchema,
  type Job,
  type StartTrainingRequest,
  type Sweep,
  type TrainerInfo,
  type TrainerService,
} from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { traceContextToRecord, traceIdOf } from "@poseloop/telemetry";
import { datasetProblems } from "./datasets/data-root.js";
import { fleetRefusal, placementOf, type Placement } from "./engines/capabilities.js";
import { pretrainedProblems } from "./experiment/experiment.js";
import { ExperimentChecker } from "./experiment/experiment-checker.js";
import { resolveTrainConfig } from "./experiment/index.js";
import { missingReferences, referenceProblems, type ReferenceLookups } from "./experiment/references.js";
import type { CheckpointList } from "./jobs/checkpoint-list.js";
import type { CheckpointStore } from "./jobs/checkpoint-store.js";
import type { QueuedJob } from "./jobs/job-executor.js";
import { isTerminal, JobEventLog, newJobId, type JobStore } from "./jobs/job-store.js";
import { PromotionPolicyService } from "./publication/policy-service.js";
import type { ModelImporter } from "./imports/model-import.js";
import { labelProblems } from "./publication/publisher.js";
import { SWEEP_ID_LABEL, SWEEP_TRIAL_LABEL, type SweepDriver, type TrialJobs } from "./sweeps/sweep-driver.js";
import { sweepHandlers } from "./sweeps/sweep-service.js";
import type { SweepStore } from "./sweeps/sweep-store.js";

export interface TrainerServiceDependencies {
  readonly store: JobStore;
  /** The onnxruntime-cpu queue, and every class's when `queueFor` is absent. */
  readonly queue: JobQueue;
  /** The queue of a placement class (engine and device kind): only trainers that can run it consume it. */
  readonly queueFor?: (placement: Placement) => Promise<JobQueue>;
  /**
   * This trainer's advertisement and the live ones of its bus (its own included). Without it StartTraining
   * queues every valid job, as before placement, and GetTrainerInfo is UNIMPLEMENTED.
   */
  /**
   * The trainers of the bus, this one first. `probed` settles once this trainer knows its own engines: a job
   * for the PyTorch engine submitted just after a start waits for it rather than being refused.
   */
  readonly trainers?: { readonly self: () => TrainerInfo; readonly live: () => Promise<TrainerInfo[]>; readonly probed?: () => Promise<void> };
  readonly checkpointList: CheckpointList;
  /** Where the runs store their checkpoints and results; without it GetJobResults is UNIMPLEMENTED. */
  readonly checkpoints?: Pick<CheckpointStore, "get">;
  readonly registry: ModelRegistry;
  readonly dataRoot: string;
  readonly authToken: string;
  readonly logger: Logger;
  /** Publishes a kept checkpoint of a job (export → gate → registry) in an export-only worker. */
  readonly publishCheckpoint: (job: Job, checkpointId: string, options: { modelName: string; skipPromotion: boolean; promotedBy?: string }) => Promise<{ serving: ModelManifest; previous?: ModelRef }>;
  /** Evaluates a version or a checkpoint in an evaluation worker (EvaluationRunner); without it Evaluate is UNIMPLEMENTED. */
  readonly evaluate?: (request: EvaluateRequest, signal: AbortSignal) => Promise<MessageInitShape<typeof EvaluateResponseSchema>>;
  /**
   * The sweeps of the bus and this trainer's driver of them; the service gives the driver its StartTraining and
   * CancelJob paths for the trials. Without it the sweep RPCs are UNIMPLEMENTED.
   */
  readonly sweeps?: { readonly store: SweepStore; readonly driver: SweepDriver };
  /** Imports and exports models made elsewhere; without it ImportModel and ExportModel are UNIMPLEMENTED. */
  readonly imports?: ModelImporter;
}

const MAX_PAGE = 500;

/**
 * How long after its creation a queued job's first queue message may be sent again, when a retry of its
 * StartTraining finds it: well inside the queues' duplicate windows (NATS: 10 min), so a message that did go
 * out the first time is dropped as a duplicate and the job runs once.
 */
const REQUEUE_WITHIN_MS = 5 * 60_000;

/**
 * Refuses to cancel or resume a job another caller submitted, unless the caller is an admin. A job that names
 * no submitter (recorded before submitters were, or on a server without credentials) is anyone's, and so is
 * every job on a server that checks no tokens: there every caller may do what an admin may.
 */
function assertMayChange(job: Job | Sweep, ctx: Pick<HandlerContext, "role" | "principal">, change: "cancelling" | "resuming"): void {
  if (job.submittedBy === "" || ctx.role === undefined || ctx.role === Role.ADMIN || job.submittedBy === ctx.principal) return;
  const what = "jobId" in job ? `job ${job.jobId}` : `sweep ${job.sweepId}`;
  throw new AppError(Code.PERMISSION_DENIED, `${what} was submitted by another caller; ${change} it needs the admin role`);
}

/**
 * TrainerService: validates and queues jobs, reports them, cancels and resumes them, publishes checkpoints,
 * evaluates versions and checkpoints.
 */
export function trainerService(deps: TrainerServiceDependencies): ServiceImpl<MethodsOf<typeof TrainerService>> {
  const { store } = deps;
  const experiments = new ExperimentChecker();
  const references: ReferenceLookups = {
    hasJob: async (jobId) => (await store.get(jobId)) !== undefined,
    checkpointIds: async (jobId) => (await deps.checkpointList.get(jobId)).map((c) => c.checkpointId),
    hasModelVersion: async (name, version) => (version === "" ? (await deps.registry.getServing(name))?.record.model !== undefined : (await deps.registry.listVersions(name)).includes(version)),
  };

  const enqueue = async (job: Job, dedupSuffix: string, endEpoch?: number): Promise<void> => {
    const message: QueuedJob = { jobId: job.jobId, ...(endEpoch === undefined ? {} : { endEpoch }) };
    const queue = job.config === undefined || deps.queueFor === undefined ? deps.queue : await deps.queueFor(placementOf(job.config));
    await queue.enqueue({ id: job.jobId, data: new TextEncoder().encode(JSON.stringify(message)), headers: traceContextToRecord(), dedupId: `${job.jobId}-${dedupSuffix}` });
  };

  /**
   * A retry of a StartTraining whose job was recorded but perhaps never queued (the queue failed after the
   * record was written): the start message goes out again under the same duplicate id, so the queue keeps one
   * of them either way, and the job's "submitted" event is written if the first attempt never got that far.
   */
  const requeueUnsent = async (job: Job): Promise<void> => {
    if (job.state !== JobState.QUEUED || job.attempt > 0) return;
    const createdMs = job.createdAt === undefined ? 0 : Number(job.createdAt.seconds) * 1000;
    if (Date.now() - createdMs > REQUEUE_WITHIN_MS) return;
    if ((await store.lastSequence(job.jobId)) === 0n) {
      const events = await JobEventLog.open(store, job.jobId);
      await events.append({ case: "stateChanged", value: { from: JobState.UNSPECIFIED, to: JobState.QUEUED, reason: "submitted" } });
    }
    await enqueue(job, "start");
  };

  /**
   * StartTraining's path, for a client's request and for a sweep's trial alike: `trialLabels` (the sweep's own
   * labels, in the trainer's reserved namespace) are added after the client's labels are checked.
   */
  const submit = async (request: StartTrainingRequest, submittedBy: string, trialLabels: Readonly<Record<string, string>> = {}): Promise<{ job: Job; existing: boolean }> => {
    let config: TrainConfig | undefined;
    let problems: string[];
    if (request.source.case === "experimentYaml") {
      ({ config, problems } = await experiments.prepare(request.source.value, { overrides: request.overrides, dataRoot: deps.dataRoot }));
    } else if (request.source.case === "config") {
      if (Object.keys(request.overrides).length > 0) throw new AppError(Code.INVALID_ARGUMENT, "overrides apply to experiment_yaml; set the fields of config directly");
      const resolved = resolveTrainConfig(request.source.value);
      problems = [
        ...resolved.problems,
        ...(resolved.problems.length === 0 ? [...(await datasetProblems(resolved.config, deps.dataRoot)), ...(await pretrainedProblems(resolved.config, deps.dataRoot))] : []),
      ];
      config = problems.length === 0 ? resolved.config : undefined;
    } else {
      throw new AppError(Code.INVALID_ARGUMENT, "StartTraining needs a config or an experiment_yaml");
    }
    problems = [...problems, ...labelProblems(request.labels)];
    if (config === undefined || problems.length > 0) throw AppError.invalid("training config", problems);
    // A job starting from a checkpoint or a model that is not there would fail at its first step, or worse,
    // go back to the queue again and again; it is refused now instead.
    const missing = await referenceProblems(config, references);
    if (missing.length > 0) throw missingReferences(missing);
    // A job no live trainer can run would wait in its queue forever. onnxruntime on the CPU is exempt: every
    // trainer runs it, and an API-only trainer queues it before any worker is up, as it always has.
    if (deps.trainers !== undefined && placementOf(config) !== "onnxruntime-cpu") {
      await deps.trainers.probed?.();
      const refusal = fleetRefusal(await deps.trainers.live(), config);
      if (refusal !== undefined) throw new AppError(Code.FAILED_PRECONDITION, refusal);
    }
    const jobId = newJobId();
    const now = timestampNow();
    const job = create(JobSchema, {
      jobId,
      state: JobState.QUEUED,
      config,
      idempotencyKey: request.idempotencyKey,
      createdAt: now,
      updatedAt: now,
      traceId: traceIdOf(),
      labels: { ...request.labels, ...trialLabels },
      submittedBy,
    });
    const created = await store.create(job);
    if (created.existing) {
      await requeueUnsent(created.job);
      return { job: created.job, existing: true };
    }
    const events = await JobEventLog.open(store, jobId);
    await events.append({ case: "stateChanged", value: { from: JobState.UNSPECIFIED, to: JobState.QUEUED, reason: "submitted" } });
    await enqueue(job, "start");
    trace.getActiveSpan()?.setAttribute("poseloop.training.job_id", jobId);
    deps.logger.info("training job queued", { job_id: jobId, experiment: config.name, model: config.publish?.modelName, submitted_by: job.submittedBy });
    return { job, existing: false };
  };

  const cancel = async (request: Pick<CancelJobRequest, "jobId" | "reason">, ctx: Pick<HandlerContext, "role" | "principal">): Promise<Job> => {
    let from = JobState.UNSPECIFIED;
    const job = await store.update(request.jobId, (j) => {
      assertMayChange(j, ctx, "cancelling");
      from = j.state;
      if (isTerminal(j.state)) throw new AppError(Code.FAILED_PRECONDITION, `job ${j.jobId} already ended (${JobState[j.state]})`);
      if (j.state === JobState.CANCELLING) return false;
      // A queued job is cancelled at once; a running one stops at its next step boundary, checkpointing.
      j.state = j.state === JobState.QUEUED ? JobState.CANCELLED : JobState.CANCELLING;
      if (j.state === JobState.CANCELLED) j.finishedAt = timestampNow();
      return true;
    });
    if (from !== job.state) {
      const events = await JobEventLog.open(store, job.jobId);
      await events.append({ case: "stateChanged", value: { from, to: job.state, reason: request.reason === "" ? "cancel requested" : `cancel requested: ${request.reason}` } });
    }
    return job;
  };

  const trialJobs: TrialJobs = {
    start: async (sweep, trial, config) => {
      const request = create(StartTrainingRequestSchema, {
        source: { case: "config", value: config },
        // One job per trial, however often a driver (or its successor) repeats the pass that queues it.
        idempotencyKey: `${sweep.sweepId}/trial-${trial.index}`,
        labels: { ...sweep.request?.labels },
      });
      return (await submit(request, sweep.submittedBy, { [SWEEP_ID_LABEL]: sweep.sweepId, [SWEEP_TRIAL_LABEL]: String(trial.index) })).job;
    },
    cancel: async (sweep, jobId, reason) => {
      try {
        // As the sweep's submitter, who submitted the trial's job.
        await cancel({ jobId, reason }, { principal: sweep.submittedBy });
      } catch (error) {
        if (!AppError.is(error, Code.FAILED_PRECONDITION)) throw error;
      }
    },
    get: async (jobId) => (await store.get(jobId))?.job,
    events: (jobId, after) => store.events(jobId, after),
  };
  deps.sweeps?.driver.attach(trialJobs);
  const sweeps = deps.sweeps === undefined ? undefined : sweepHandlers({ ...deps.sweeps, jobs: trialJobs, dataRoot: deps.dataRoot, logger: deps.logger });
  const policies = new PromotionPolicyService({ registry: deps.registry, experiments, dataRoot: deps.dataRoot, logger: deps.logger });
  const requireSweeps = (): NonNullable<typeof sweeps> => {
    if (sweeps === undefined) throw new AppError(Code.UNIMPLEMENTED, "this trainer runs no sweeps");
    return sweeps;
  };

  return {
    async startTraining(request, ctx) {
      return submit(request, ctx.principal ?? "");
    },

    async *watchJob(request, ctx) {
      await store.require(request.jobId);
      for await (const event of store.watch(request.jobId, request.afterSequence, AbortSignal.any([ctx.signal, ctx.draining]))) {
        if (request.skipProgress && event.event.case === "progress") continue;
        yield { event };
      }
    },

    async getJob(request) {
      return { job: (await store.require(request.jobId)).job };
    },

    async listJobs(request) {
      const size = request.pageSize === 0 ? 50 : Math.min(request.pageSize, MAX_PAGE);
      const offset = request.pageToken === "" ? 0 : Number.parseInt(Buffer.from(request.pageToken, "base64url").toString(), 10);
      if (!Number.isInteger(offset) || offset < 0) throw new AppError(Code.INVALID_ARGUMENT, "page_token is not one this trainer issued");
      const states = new Set(request.states);
      const jobs = (await store.list()).filter((job) => states.size === 0 || states.has(job.state));
      const page = jobs.slice(offset, offset + size);
      const next = offset + size < jobs.length ? Buffer.from(String(offset + size)).toString("base64url") : "";
      return { jobs: page, nextPageToken: next };
    },

    async cancelJob(request, ctx) {
      return { job: await cancel(request, ctx) };
    },

    async resumeJob(request, ctx) {
      let from = JobState.UNSPECIFIED;
      const job = await store.update(request.jobId, (j) => {
        assertMayChange(j, ctx, "resuming");
        from = j.state;
        if (j.state !== JobState.CANCELLED && j.state !== JobState.FAILED) {
          throw new AppError(Code.FAILED_PRECONDITION, `only cancelled or failed jobs resume; job ${j.jobId} is ${JobState[j.state]}`);
        }
        // A new end epoch travels with the queued job; the record takes it once the run accepted the checkpoint.
        const done = j.lastCheckpoint?.epoch ?? 0;
        if (request.endEpoch !== 0 && request.endEpoch <= done) throw new AppError(Code.INVALID_ARGUMENT, `end_epoch ${request.endEpoch} is not after the last checkpoint's epoch ${done}`);
        j.state = JobState.QUEUED;
        j.workerId = "";
        delete j.error;
        delete j.finishedAt;
      });
      const events = await JobEventLog.open(store, job.jobId);
      const to = request.endEpoch === 0 ? "" : ` with END_EPOCH ${request.endEpoch}`;
      await events.append({ case: "stateChanged", value: { from, to: JobState.QUEUED, reason: job.lastCheckpoint === undefined ? `resume requested${to}; no checkpoint yet, starting over` : `resume requested from ${job.lastCheckpoint.checkpointId}${to}` } });
      await enqueue(job, `resume-${job.attempt}-${Date.now()}`, request.endEpoch === 0 ? undefined : request.endEpoch);
      return { job };
    },

    async getTrainerInfo() {
      if (deps.trainers === undefined) throw new AppError(Code.UNIMPLEMENTED, "this trainer does not track the trainers of its bus");
      // Right after a start, the answer waits for this trainer's own probe rather than leave its engines out.
      await deps.trainers.probed?.();
      const self = deps.trainers.self();
      const others = (await deps.trainers.live()).filter((info) => info.workerId !== self.workerId);
      return { trainer: self, others };
    },

    async listCheckpoints(request) {
      await store.require(request.jobId);
      return { checkpoints: await deps.checkpointList.get(request.jobId) };
    },

    async getJobResults(request) {
      const checkpoints = deps.checkpoints;
      if (checkpoints === undefined) throw new AppError(Code.UNIMPLEMENTED, "this trainer serves no job results");
      // The running attempt rewrites its results file before it records the checkpoint that names the new
      // digest: a read between the two finds the record one checkpoint behind, and reads it again.
      for (let attempt = 0; ; attempt++) {
        const last = (await store.require(request.jobId)).job.lastCheckpoint;
        if (last === undefined || last.resultsLocation === "") {
          throw new AppError(Code.NOT_FOUND, `job ${request.jobId} has no results yet: they are written with each checkpoint, the first at the end of epoch 1`);
        }
        try {
          return fromBinary(GetJobResultsResponseSchema, await checkpoints.get(last.resultsLocation, last.resultsDigest));
        } catch (error) {
          if (!AppError.is(error, Code.DATA_LOSS) || attempt >= 3) throw error;
          await new Promise((resolve) => setTimeout(resolve, 200));
        }
      }
    },

    async evaluate(request, ctx) {
      if (deps.evaluate === undefined) throw new AppError(Code.UNIMPLEMENTED, "this trainer does not evaluate models");
      return deps.evaluate(request, AbortSignal.any([ctx.signal, ctx.draining]));
    },

    async startSweep(request, ctx) {
      return requireSweeps().start(request, ctx.principal ?? "", labelProblems(request.labels));
    },

    async getSweep(request) {
      return requireSweeps().get(request);
    },

    async listSweeps() {
      return requireSweeps().list();
    },

    async *watchSweep(request, ctx) {
      yield* requireSweeps().watch(request, AbortSignal.any([ctx.signal, ctx.draining]));
    },

    async cancelSweep(request, ctx) {
      return requireSweeps().cancel(request, (sweep) => assertMayChange(sweep, ctx, "cancelling"));
    },

    async getPromotionPolicy(request) {
      return policies.get(request);
    },

    async setPromotionPolicy(request, ctx) {
      return policies.set(request, ctx.principal ?? `rpc:${ctx.peer}`);
    },

    async listPromotionDecisions(request) {
      return policies.decisions(request);
    },

    async importModel(request, ctx) {
      if (deps.imports === undefined) throw new AppError(Code.UNIMPLEMENTED, "this trainer does not import models");
      const decidedBy = ctx.principal ?? `rpc:${ctx.peer}`;
      const result = await deps.imports.importModel(request, decidedBy, AbortSignal.any([ctx.signal, ctx.draining]));
      // An import is an admin's publication: when it serves, it does so by hand, over the policy, and the
      // decision log says so as it does for PublishCheckpoint's.
      if (result.promoted) {
        await policies.recordOverride(request.modelName, { candidate: result.manifest.model, serving: result.previous, decidedBy, reason: `imported and promoted by hand${request.reason === "" ? "" : `: ${request.reason}`}` });
      }
      return { manifest: result.manifest, promoted: result.promoted, alreadyImported: result.alreadyImported, ...(result.quantization === undefined ? {} : { quantization: result.quantization }) };
    },

    async exportModel(request) {
      if (deps.imports === undefined) throw new AppError(Code.UNIMPLEMENTED, "this trainer does not export models");
      return deps.imports.exportModel(request);
    },

    async publishCheckpoint(request, ctx) {
      const reason = request.reason;
      const who = `rpc:${ctx.peer}`;
      // Promotions by hand are an admin's overrides of the promotion policy; the decision log keeps them too.
      const decidedBy = ctx.principal ?? who;
      switch (request.target.case) {
        case "rollbackModelName": {
          const { serving, previous } = await deps.registry.rollback(request.target.value, { setBy: who, reason: reason || "rollback" });
          await policies.recordOverride(request.target.value, { candidate: serving.record.model, serving: previous.record.model, decidedBy, reason: `rolled back by hand${reason === "" ? "" : `: ${reason}`}` });
          const manifest = await deps.registry.getManifest(request.target.value, serving.record.model?.version ?? "");
          return { serving: manifest, ...(previous.record.model === undefined ? {} : { previous: previous.record.model }) };
        }
        case "version": {
          const ref = request.target.value;
          const current = await deps.registry.getServing(ref.name);
          const entry = await deps.registry.setServing(ref.name, { name: ref.name, version: ref.version }, { expectedRevision: current?.revision ?? 0, setBy: who, reason: reason || "set serving version" });
          await policies.recordOverride(ref.name, { candidate: entry.record.model, serving: current?.record.model, decidedBy, reason: `promoted by hand${reason === "" ? "" : `: ${reason}`}` });
          const manifest = await deps.registry.getManifest(ref.name, entry.record.model?.version ?? "");
          return { serving: manifest, ...(current?.record.model === undefined ? {} : { previous: create(ModelRefSchema, current.record.model) }) };
        }
        case "checkpoint": {
          const target = request.target.value;
          const { job } = await store.require(target.jobId);
          const modelName = target.modelName || job.config?.publish?.modelName || "";
          if (modelName === "") throw new AppError(Code.INVALID_ARGUMENT, "name the model to publish under (the job's config has no PUBLISH.MODEL_NAME)");
          const found = (await deps.checkpointList.get(job.jobId)).some((c) => c.checkpointId === target.checkpointId);
          if (!found) throw new AppError(Code.NOT_FOUND, `job ${job.jobId} keeps no checkpoint ${target.checkpointId}`);
          return deps.publishCheckpoint(job, target.checkpointId, { modelName, skipPromotion: target.skipPromotion, promotedBy: decidedBy });
        }
        default:
          throw new AppError(Code.INVALID_ARGUMENT, "PublishCheckpoint needs a checkpoint, a rollback_model_name or a version");
      }
    },
  };
}
