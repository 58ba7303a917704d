import { clone, create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { context as otelContext, SpanKind, trace, type Span } from "@opentelemetry/api";
import { DEFAULT_MAX_DELIVERIES, type JobDelivery, type JobQueue, type KeyValueStore, type ModelRegistry } from "@poseloop/bus";
import { createServer } from "node:net";
import { AppError, Code, type Logger } from "@poseloop/core";
import { KeypointMetricsSchema, type KeypointMetrics } from "@poseloop/proto/poseloop/common/v1/metrics_pb";
import { ModelRefSchema, type ModelManifest, type ModelRef } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { StatusSchema } from "@poseloop/proto/poseloop/common/v1/status_pb";
import { Device, PublishMode, TrainConfigSchema, TrainingEngine as TrainingEngineKind, type TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import {
  CheckpointReason,
  CheckpointSchema,
  JobProgressSchema,
  JobSchema,
  JobState,
  type Checkpoint,
  type Job,
} from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { recordError, traceContextFromRecord, withSpan } from "@poseloop/telemetry";
import type { DataRoots } from "../datasets/data-root.js";
import { exportInWorker } from "../publication/export-session.js";
import { PromotionGate, type PromotionGateDependencies } from "../publication/promotion.js";
import { Publisher, type PublicationLog, type PublicationTarget } from "../publication/publisher.js";
import { decodeCheckpoint } from "../runner/checkpoint-file.js";
import { TrainingSession } from "../runner/training-session.js";
import type { TrainChunk } from "../runner/training-run.js";
import { canRun, type TrainerCapabilities } from "../engines/capabilities.js";
import { recordEpochDuration, recordTrainingChunk, recordValidationAp } from "../trainer-metrics.js";
import type { CrashAt, CrashPhase } from "../config.js";
import type { CheckpointStore } from "./checkpoint-store.js";
import { queueNodeTasks } from "./node-runner.js";
import type { CheckpointList } from "./checkpoint-list.js";
import { isTerminal, JobEventLog, StaleOwnerError, type JobOwner, type JobStore } from "./job-store.js";

const tracer = () => trace.getTracer("@poseloop/trainer");

export interface ExecutorDependencies {
  readonly store: JobStore;
  readonly checkpoints: CheckpointStore;
  readonly checkpointList: CheckpointList;
  readonly registry: ModelRegistry;
  readonly roots: DataRoots;
  readonly workerId: string;
  readonly logger: Logger;
  /** The queue's lease; heartbeats go out every second, or at a third of it when that is shorter. */
  readonly ackWaitMs: number;
  /** The queue's delivery limit (default DEFAULT_MAX_DELIVERIES): a failure on the last delivery ends the job FAILED. */
  readonly maxDeliveries?: number;
  /**
   * Where a job handed back on its last delivery is queued again: a trainer stopping (a rolling restart) is
   * not the job failing, and must not use up its deliveries.
   */
  readonly queue?: Pick<JobQueue, "enqueue">;
  /**
   * What this trainer can run: a job it was handed but cannot (a GPU index it lacks) fails saying why. `now`
   * is what is known so far (onnxruntime before the torch probe answers); `probed` settles with the probe.
   */
  readonly capabilities?: { readonly now: () => TrainerCapabilities; readonly probed: Promise<TrainerCapabilities> };
  /** The trainer's environment, for engine processes. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** POSELOOP_CRASH_AT: where a fault-injection test makes this process die (see #crashPoint). */
  readonly crashAt?: CrashAt;
  /** POSELOOP_ENGINE_TIMEOUT. */
  readonly engineTimeoutMs?: number;
  /** Where a multi-node job's other nodes are queued, by device kind (see node-runner.ts). */
  readonly nodeQueue?: (kind: "cpu" | "cuda") => Promise<Pick<JobQueue, "enqueue">>;
  /** POSELOOP_RDZV_HOST: the address other nodes reach this trainer at, for a rendezvous it hosts. */
  readonly rdzvHost?: string;
  /**
   * How an if-better policy measures the serving version (the Evaluate RPC's EvaluationRunner); without it such
   * a policy promotes nothing (it cannot compare).
   */
  readonly evaluate?: PromotionGateDependencies["evaluate"];
  /** Where APs measured on reference sets are kept between publications (REFERENCE_AP_BUCKET). */
  readonly referenceAps?: KeyValueStore;
}

/** How #execute settles its delivery: acked (a final state), handed back (stopping), or left (taken over). */
type Outcome = "done" | "handBack" | "stale";

/** The queue message of a job: its id (the record holds everything else) and what a resume asks to change. */
export interface QueuedJob {
  readonly jobId: string;
  /**
   * ResumeJob's new TRAIN.END_EPOCH. It reaches the job's record only once the resumed run has accepted the
   * checkpoint, so a resume that fails leaves the config as it was for the next one.
   */
  readonly endEpoch?: number;
}

/** The process is stopping: the job goes back to the queue, as it is, for another trainer. */
class HandBack extends Error {}

/** Why the run stopped early. */
class Stop extends Error {
  constructor(readonly state: JobState.CANCELLED | JobState.FAILED, readonly reason: string, readonly error?: AppError) {
    super(reason);
  }
}

/** A job's error for users: the message with every problem, never a stack. */
function statusOf(error: AppError): { code: number; message: string } {
  return { code: error.code, message: error.problems.length === 0 ? error.message : `${error.message}: ${error.problems.join("; ")}` };
}

function metricsOf(bytes: Uint8Array | undefined): KeypointMetrics | undefined {
  return bytes === undefined ? undefined : fromBinary(KeypointMetricsSchema, bytes);
}

/**
 * Runs one job taken from the queue: takes it over (a crashed owner's job continues from its last
 * checkpoint), drives the training worker epoch by epoch, reports progress, validates, checkpoints (every epoch,
 * every N minutes, on cancel; keeping the last K and the best), publishes by policy, and records the outcome.
 * The delivery is acked only when the job reached a final state, so a process that dies mid-job leaves it to
 * be redelivered to another trainer.
 */
export class JobExecutor {
  readonly #deps: ExecutorDependencies;
  readonly #publisher: Publisher;
  readonly #crashAt: CrashAt | undefined;
  #crashPointsReached = 0;

  constructor(deps: ExecutorDependencies) {
    this.#deps = deps;
    const promotion = new PromotionGate({
      registry: deps.registry,
      roots: deps.roots,
      logger: deps.logger,
      ...(deps.evaluate === undefined ? {} : { evaluate: deps.evaluate }),
      ...(deps.referenceAps === undefined ? {} : { apCache: deps.referenceAps }),
    });
    this.#publisher = new Publisher(deps.registry, deps.logger, promotion);
    this.#crashAt = deps.crashAt;
  }

  /**
   * POSELOOP_CRASH_AT, for fault-injection tests: the process dies here as in a power cut (SIGKILL: no
   * cleanup, no last write), the Nth time it reaches `phase`.
   */
  #crashPoint(phase: CrashPhase): void {
    if (this.#crashAt?.phase !== phase || ++this.#crashPointsReached < this.#crashAt.occurrence) return;
    this.#deps.logger.warn("POSELOOP_CRASH_AT: killing this process", { phase, occurrence: this.#crashPointsReached });
    process.kill(process.pid, "SIGKILL");
  }

  /** `from` is the queue the delivery came from, where a job handed back on its last delivery goes again. */
  async run(delivery: JobDelivery, signal: AbortSignal, from?: Pick<JobQueue, "enqueue">): Promise<void> {
    const { store, logger } = this.#deps;
    let queued: QueuedJob;
    try {
      queued = JSON.parse(new TextDecoder().decode(delivery.data)) as QueuedJob;
      await store.require(queued.jobId);
    } catch (error) {
      logger.error("dropping an unreadable or unknown queued job", { err: error, delivery: delivery.id });
      await delivery.term();
      return;
    }
    // At most a second apart: with the 6 s default lease a live trainer keeps its job through a 5 s stall of its
    // main thread, where a third of the lease would allow 4 s (one small NATS message a second per job).
    const heartbeatMs = Math.max(250, Math.min(this.#deps.ackWaitMs / 3, 1000));
    const heartbeat = setInterval(() => void delivery.heartbeat().catch((error: unknown) => logger.warn("job heartbeat failed", { err: error, job_id: queued.jobId })), heartbeatMs);
    const held: { owner?: JobOwner } = {};
    try {
      const outcome = await this.#execute(queued, delivery, signal, held);
      if (outcome === "done") await delivery.ack();
      else if (outcome === "handBack") await this.#handBack(queued.jobId, delivery, held.owner, from);
      // "stale": the job is another trainer's delivery now; acking or naking this one would settle theirs.
    } catch (error) {
      const max = this.#deps.maxDeliveries ?? DEFAULT_MAX_DELIVERIES;
      if (error instanceof StaleOwnerError) {
        logger.warn("this trainer's attempt of the job was taken over by another trainer; it stops and writes nothing more", { job_id: queued.jobId, reason: error.message });
      } else if (delivery.deliveryCount >= max) {
        await this.#giveUp(queued.jobId, delivery, error, held.owner);
      } else {
        logger.error("job execution failed; leaving it for redelivery", { err: error, job_id: queued.jobId, delivery: delivery.deliveryCount, max_deliveries: max });
        await delivery.nak(2000).catch(() => undefined);
      }
    } finally {
      clearInterval(heartbeat);
    }
  }

  async #handBack(jobId: string, delivery: JobDelivery, owner: JobOwner | undefined, from: Pick<JobQueue, "enqueue"> | undefined): Promise<void> {
    // A job goes back to its own placement's queue, where only trainers that can run it look.
    const queue = from ?? this.#deps.queue;
    if (queue === undefined || delivery.deliveryCount < (this.#deps.maxDeliveries ?? DEFAULT_MAX_DELIVERIES)) {
      await delivery.nak(1000);
      return;
    }
    await queue.enqueue({ id: jobId, data: delivery.data, headers: delivery.headers, dedupId: `${jobId}.handed-back.${owner?.attempt ?? 0}` });
    await delivery.ack();
  }

  /**
   * The queue will not deliver the job again, so its last failure is final: the job ends FAILED saying why,
   * instead of staying RUNNING with no trainer.
   */
  async #giveUp(jobId: string, delivery: JobDelivery, error: unknown, owner: JobOwner | undefined): Promise<void> {
    const { store, logger } = this.#deps;
    const cause = AppError.from(error);
    const reason = `gave up after ${delivery.deliveryCount} deliveries, the queue's limit; the last one failed: ${cause.message}`;
    logger.error("job failed on its last delivery; it ends FAILED", { err: error, job_id: jobId, delivery: delivery.deliveryCount });
    try {
      const events = await JobEventLog.open(store, jobId);
      if (owner !== undefined) events.fence(owner);
      const { job } = await store.require(jobId);
      if (!isTerminal(job.state)) await this.#finish(events, jobId, JobState.FAILED, reason, new AppError(cause.code, reason, { cause: error }), owner);
    } catch (finishError) {
      logger.error("could not record the job's failure", { err: finishError, job_id: jobId });
    }
    await delivery.term().catch((termError: unknown) => logger.warn("could not terminate the job's delivery", { err: termError, job_id: jobId }));
  }

  async #execute(queued: QueuedJob, delivery: JobDelivery, signal: AbortSignal, held: { owner?: JobOwner }): Promise<Outcome> {
    const { store, logger, workerId } = this.#deps;
    const jobId = queued.jobId;
    const events = await JobEventLog.open(store, jobId);
    const before = (await store.require(jobId)).job;
    if (isTerminal(before.state)) return "done";
    if (before.state === JobState.CANCELLING) {
      await this.#finish(events, jobId, JobState.CANCELLED, "cancelled before it started");
      return "done";
    }
    const previousOwner = before.state === JobState.RUNNING ? before.workerId : "";
    const job = await store.update(jobId, (j) => {
      j.state = JobState.RUNNING;
      j.workerId = workerId;
      j.attempt += 1;
      j.startedAt ??= timestampNow();
    });
    // Every later write of this run is conditioned on this attempt: a takeover makes them all fail.
    const owner: JobOwner = { workerId, attempt: job.attempt };
    held.owner = owner;
    events.fence(owner);
    const reason =
      previousOwner === ""
        ? job.attempt > 1
          ? "resumed"
          : "started"
        : previousOwner === workerId
          ? `resumed by ${workerId} after its own previous attempt stopped (delivery ${delivery.deliveryCount})`
          : `taken over from ${previousOwner}, which stopped responding (delivery ${delivery.deliveryCount})`;
    await events.append({ case: "stateChanged", value: { from: before.state, to: JobState.RUNNING, reason } });
    logger.info("running a training job", { job_id: jobId, attempt: job.attempt, reason });

    const parent = traceContextFromRecord(delivery.headers, otelContext.active());
    return withSpan(tracer(), "training.job", { kind: SpanKind.CONSUMER, parent, attributes: { "poseloop.training.job_id": jobId, "poseloop.training.attempt": job.attempt, "poseloop.trainer.worker_id": workerId } }, async (span): Promise<Outcome> => {
      try {
        await this.#train(job, queued.endEpoch, events, span, signal, owner);
        return "done";
      } catch (error) {
        if (error instanceof StaleOwnerError) throw error;
        if (error instanceof Stop) {
          await this.#finish(events, jobId, error.state, error.reason, error.error, owner);
          return "done";
        }
        if (error instanceof HandBack || signal.aborted) {
          logger.warn("trainer stopping mid-job; the job will resume from its last checkpoint", { job_id: jobId });
          return "handBack";
        }
        const appError = AppError.from(error);
        recordError(span, appError);
        if (appError.code === Code.UNAVAILABLE) throw appError;
        await this.#finish(events, jobId, JobState.FAILED, appError.message, appError, owner);
        return "done";
      }
    });
  }

  async #finish(events: JobEventLog, jobId: string, state: JobState, reason: string, error?: AppError, owner?: JobOwner): Promise<void> {
    let from = JobState.UNSPECIFIED;
    await this.#deps.store.update(
      jobId,
      (j) => {
        from = j.state;
        j.state = state;
        j.finishedAt = timestampNow();
        if (error !== undefined) j.error = create(StatusSchema, statusOf(error));
      },
      owner,
    );
    await events.append({ case: "stateChanged", value: { from, to: state, reason, ...(error === undefined ? {} : { error: statusOf(error) }) } });
    this.#deps.logger.info("training job ended", { job_id: jobId, state: JobState[state], reason });
  }

  async #train(recorded: Job, endEpoch: number | undefined, events: JobEventLog, jobSpan: Span, signal: AbortSignal, owner: JobOwner): Promise<void> {
    const { store, checkpoints, logger } = this.#deps;
    const jobId = recorded.jobId;
    const job = clone(JobSchema, recorded);
    const config = job.config ?? create(TrainConfigSchema);
    if (endEpoch !== undefined && endEpoch !== 0) config.endEpoch = endEpoch;
    job.config = config;
    const resumeFrom = job.lastCheckpoint;
    // Only a job that needs torch (the PyTorch engine, or a state_dict to read) waits for the probe.
    const needsTorch = config.engine === TrainingEngineKind.PYTORCH || (config.model?.pretrained ?? "") !== "";
    const capabilities = needsTorch ? await this.#deps.capabilities?.probed : this.#deps.capabilities?.now();
    if (capabilities !== undefined) {
      const verdict = canRun(capabilities, config);
      if (!verdict.ok) throw new AppError(Code.FAILED_PRECONDITION, verdict.reason);
    }
    const python = capabilities?.engines.find((engine) => engine.name === "pytorch" && engine.available)?.python;
    const checkpoint = resumeFrom === undefined ? undefined : await checkpoints.get(resumeFrom.location, resumeFrom.digest);
    const rendezvous = await this.#rendezvous(config, jobId, owner);
    const fineTune = checkpoint === undefined ? await this.#initWeights(config) : undefined;
    const teacher = await this.#teacher(config);
    const session = await TrainingSession.start({
      jobId,
      config: toBinary(TrainConfigSchema, config),
      roots: this.#deps.roots,
      ...(checkpoint === undefined ? {} : { checkpoint }),
      ...(fineTune === undefined ? {} : { initWeights: fineTune, skipLayers: [...(config.initFrom?.skipLayers ?? [])] }),
      ...(teacher === undefined ? {} : { teacher }),
      ...(python === undefined ? {} : { python }),
      ...(this.#deps.env === undefined ? {} : { env: { ...this.#deps.env } }),
      ...(this.#deps.engineTimeoutMs === undefined ? {} : { engineTimeoutMs: this.#deps.engineTimeoutMs }),
      ...(rendezvous === undefined ? {} : { rendezvous }),
    }, `poseloop-training-${jobId}`);
    const cancelWatch = new AbortController();
    const watching = (async () => {
      for await (const record of store.watchRecord(jobId, AbortSignal.any([cancelWatch.signal, signal]))) {
        // Taken over (this trainer was silent past its lease): stop at the next step boundary, where the
        // fenced writes find out and the run ends without writing.
        if (record.state === JobState.CANCELLING || record.attempt !== owner.attempt || record.workerId !== owner.workerId) session.cancel();
      }
    })().catch(() => undefined);
    const onStop = (): void => session.cancel();
    signal.addEventListener("abort", onStop, { once: true });
    try {
      // The run accepted the checkpoint under the resumed config: from now on the job's record holds it.
      if (config.endEpoch !== recorded.config?.endEpoch) {
        const resumed = clone(TrainConfigSchema, config);
        await store.update(
          jobId,
          (j) => {
            j.config = resumed;
          },
          owner,
        );
      }
      if (resumeFrom !== undefined) logger.info("resuming from checkpoint", { job_id: jobId, checkpoint: resumeFrom.checkpointId });
      jobSpan.setAttribute("poseloop.training.resumed_from", resumeFrom?.checkpointId ?? "");
      await this.#epochs(job, session, events, signal, owner);
    } finally {
      signal.removeEventListener("abort", onStop);
      cancelWatch.abort();
      await watching;
      await session.close();
    }
  }

  async #epochs(job: Job, session: TrainingSession, events: JobEventLog, signal: AbortSignal, owner: JobOwner): Promise<void> {
    const { store } = this.#deps;
    const config = job.config as TrainConfig;
    const jobId = job.jobId;
    const everyMs = config.checkpoint?.everyMinutes ? config.checkpoint.everyMinutes * 60_000 : 0;
    let lastCheckpointAt = Date.now();
    let samples = 0;
    let seconds = 0;
    const resumed = job.lastCheckpoint;
    let kept = await this.#deps.checkpointList.get(jobId);
    if (resumed !== undefined && !kept.some((c) => c.checkpointId === resumed.checkpointId && c.location === resumed.location)) {
      // The previous attempt died between recording its checkpoint in the job and listing it (#saveCheckpoint):
      // the record is the truth. Unlisted, the checkpoint would be missing from ListCheckpoints, never deleted,
      // and passed over for an older "best" at publication.
      await store.assertOwner(jobId, owner);
      await this.#listCheckpoint(job, resumed, events);
      kept = await this.#deps.checkpointList.get(jobId);
    }
    let best: { checkpoint: Checkpoint | undefined; ap: number } = { checkpoint: resumed?.isBest === true ? resumed : undefined, ap: session.position.bestAp };
    const bestSoFar = kept.find((c) => c.isBest);
    if (bestSoFar !== undefined) best = { checkpoint: bestSoFar, ap: session.position.bestAp };
    /** The checkpoint of the weights the worker holds now, once this attempt has written one. */
    let current: Checkpoint | undefined;
    const run = { jobId, modelName: config.publish?.modelName ?? "" };

    while (session.position.epoch < config.endEpoch) {
      const epoch = session.position.epoch;
      // A resumed epoch's time is only its rest: not a point of the epoch-time histogram.
      const whole = session.position.nextBatch === 0;
      const epochStarted = performance.now();
      await withSpan(tracer(), "training.epoch", { attributes: { "poseloop.training.job_id": jobId, "poseloop.training.epoch": epoch } }, async (epochSpan) => {
        let ended = false;
        while (!ended) {
          const chunk = await this.#trainOrKeepState(job, session, events, owner);
          samples += chunk.samples;
          seconds += chunk.seconds;
          recordTrainingChunk(run, chunk);
          const p = chunk.position;
          const rate = seconds > 0 ? samples / seconds : 0;
          const remainingBatches = (config.endEpoch - p.epoch) * p.batchesPerEpoch - p.nextBatch;
          const progress = {
            epoch: chunk.epochEnded ? p.epoch - 1 : p.epoch,
            endEpoch: config.endEpoch,
            step: BigInt(p.step),
            stepInEpoch: Math.floor((chunk.epochEnded ? p.batchesPerEpoch : p.nextBatch) / config.gradAccumSteps),
            stepsPerEpoch: p.stepsPerEpoch,
            loss: chunk.loss,
            lr: chunk.lr,
            samplesPerSecond: rate,
            etaSeconds: rate > 0 ? Math.round((remainingBatches * p.samplesPerBatch) / rate) : 0,
            gradNorm: Number.isFinite(chunk.gradNorm) ? chunk.gradNorm : 0,
            lossScale: chunk.lossScale,
            engine: p.engine,
          };
          if (chunk.batches > 0) {
            await events.append({ case: "progress", value: progress });
            await store.update(
              jobId,
              (j) => {
                j.progress = create(JobProgressSchema, progress);
              },
              owner,
            );
          }
          if (chunk.nonFinite) {
            // Nothing of this chunk is checkpointed: the job keeps its last good checkpoint to resume from.
            const what = chunk.nonFiniteAt?.what === "weights" ? "weights" : "loss";
            const step = chunk.nonFiniteAt?.step ?? p.step;
            const subject = what === "weights" ? "the weights are" : "the loss is";
            await events.append({ case: "warning", value: { code: "loss_not_finite", message: `${subject} not finite after step ${step}; lower TRAIN.LR or set TRAIN.CLIP_GRAD` } });
            throw new Stop(
              JobState.FAILED,
              what === "weights" ? "the weights diverged" : "the loss diverged",
              new AppError(Code.FAILED_PRECONDITION, `${what === "weights" ? "the weights" : "the loss"} became non-finite at epoch ${progress.epoch} step ${step}; resume from the last checkpoint with a lower TRAIN.LR or TRAIN.CLIP_GRAD`),
            );
          }
          if (chunk.cancelled) {
            await store.assertOwner(jobId, owner);
            // A cancel right after a checkpoint (at an epoch's end) keeps that checkpoint and its metrics as they are.
            const at = chunk.position;
            const saved = (await store.require(jobId)).job.lastCheckpoint;
            const unchanged = saved !== undefined && saved.epoch === at.epoch && saved.step === BigInt(at.step) && at.nextBatch === 0;
            if (!unchanged) await this.#saveCheckpoint(job, session, events, CheckpointReason.CANCEL, undefined, false, owner);
            // A trainer shutting down hands the job back to the queue; another trainer resumes it from here.
            if (signal.aborted) throw new HandBack();
            throw new Stop(JobState.CANCELLED, "cancelled at a step boundary");
          }
          ended = chunk.epochEnded;
          if (!ended && everyMs > 0 && Date.now() - lastCheckpointAt >= everyMs) {
            await this.#saveCheckpoint(job, session, events, CheckpointReason.TIMER, undefined, false, owner);
            lastCheckpointAt = Date.now();
          }
        }
        epochSpan.setAttribute("poseloop.training.step", session.position.step);
      });
      if (whole) recordEpochDuration(run, (performance.now() - epochStarted) / 1000);
      const completed = session.position.epoch;
      const validate = (completed - config.beginEpoch) % Math.max(1, config.validateEveryEpochs) === 0 || completed === config.endEpoch;
      let metrics: KeypointMetrics | undefined;
      let isBest = false;
      if (validate) {
        const outcome = await withSpan(tracer(), "training.validate", { attributes: { "poseloop.training.job_id": jobId, "poseloop.training.epoch": completed } }, async (span) => {
          const result = await session.validate();
          span.setAttribute("poseloop.metrics.ap", result.ap);
          return result;
        });
        recordValidationAp(run, outcome.ap);
        metrics = metricsOf(outcome.metrics);
        isBest = outcome.isBest;
        await events.append({ case: "validation", value: { epoch: completed, step: BigInt(outcome.step), ...(metrics === undefined ? {} : { metrics }), isBest, durationMs: outcome.durationMs } });
        if (isBest && metrics !== undefined) {
          const m = metrics;
          await store.update(
            jobId,
            (j) => {
              j.bestMetrics = m;
              j.bestEpoch = completed;
            },
            owner,
          );
        }
      }
      current = await this.#saveCheckpoint(job, session, events, CheckpointReason.EPOCH_END, metrics, isBest, owner);
      lastCheckpointAt = Date.now();
      if (isBest) best = { checkpoint: current, ap: metrics?.ap ?? 0 };
      if (config.publish?.mode === PublishMode.EVERY_EPOCH && validate) await this.#publishFromRun(job, events, session, current, true, owner);
    }
    const mode = config.publish?.mode ?? PublishMode.BEST;
    if (mode === PublishMode.BEST && best.checkpoint !== undefined) {
      await this.#publishFromRun(job, events, session, best.checkpoint, best.checkpoint.checkpointId === current?.checkpointId, owner);
    } else if (mode === PublishMode.FINAL) {
      // The run ends holding the weights of its last checkpoint (written by this attempt, or restored from it).
      const last = current ?? (await store.require(jobId)).job.lastCheckpoint;
      if (last !== undefined) await this.#publishFromRun(job, events, session, last, true, owner);
    }
    await this.#finish(events, jobId, JobState.SUCCEEDED, "training finished", undefined, owner);
  }

  /**
   * TRAIN.NODES > 1: this trainer runs node 0 of the attempt; the other nodes are queued for trainers of the same
   * device kind, with the attempt's own rendezvous (an earlier attempt's nodes never join it: a fresh port).
   * Node 0 hosts it at TRAIN.RDZV_ENDPOINT, or at POSELOOP_RDZV_HOST and a free port.
   */
  async #rendezvous(config: TrainConfig, jobId: string, owner: JobOwner): Promise<{ endpoint: string; id: string } | undefined> {
    if (config.engine !== TrainingEngineKind.PYTORCH || config.nodes <= 1) return undefined;
    const queueFor = this.#deps.nodeQueue;
    if (queueFor === undefined) throw new AppError(Code.FAILED_PRECONDITION, `job ${jobId} spans ${config.nodes} nodes, and this trainer cannot queue the other nodes`);
    const chosen = config.rdzvEndpoint === "";
    const endpoint = chosen ? `${this.#deps.rdzvHost ?? "127.0.0.1"}:${await freePort()}` : config.rdzvEndpoint;
    const id = `${jobId}-a${owner.attempt}`;
    const queue = await queueFor(config.device === Device.CUDA ? "cuda" : "cpu");
    await queueNodeTasks(queue, jobId, owner.attempt, { gpus: Math.max(1, config.gpus), nodes: config.nodes, rdzvEndpoint: endpoint, rdzvId: id });
    this.#deps.logger.info("queued the other nodes of a multi-node job", { job_id: jobId, nodes: config.nodes, rdzv_endpoint: endpoint });
    return { endpoint, id };
  }

  /**
   * One chunk of training. A step the engine could not take for lack of device memory fails the job, but the
   * engine still holds the state from before that step: it is kept as a checkpoint, so the work is not lost and
   * a new job can start from it with a batch that fits (a resume cannot change the batch: it shapes the state).
   */
  async #trainOrKeepState(job: Job, session: TrainingSession, events: JobEventLog, owner: JobOwner): Promise<TrainChunk> {
    try {
      return await session.train((job.config as TrainConfig).logEverySteps);
    } catch (error) {
      const failure = AppError.from(error);
      if (failure.code !== Code.RESOURCE_EXHAUSTED) throw error;
      let kept = "";
      try {
        const checkpoint = await this.#saveCheckpoint(job, session, events, CheckpointReason.FAILURE, undefined, false, owner);
        kept = `; the state before that step is checkpoint ${checkpoint.checkpointId}: start a new job from it with INIT_FROM.JOB_ID ${job.jobId} and INIT_FROM.CHECKPOINT_ID ${checkpoint.checkpointId}`;
      } catch (saveError) {
        if (saveError instanceof StaleOwnerError) throw saveError;
        this.#deps.logger.warn("could not keep the state of a job that ran out of memory", { err: saveError, job_id: job.jobId });
      }
      throw new Stop(JobState.FAILED, `${failure.message}${kept}`, new AppError(Code.RESOURCE_EXHAUSTED, `${failure.message}${kept}`, { cause: error }));
    }
  }

  async #saveCheckpoint(
    job: Job,
    session: TrainingSession,
    events: JobEventLog,
    reason: CheckpointReason,
    metrics: KeypointMetrics | undefined,
    isBest: boolean,
    owner: JobOwner,
  ): Promise<Checkpoint> {
    const { store, checkpoints } = this.#deps;
    const written = await session.checkpoint();
    await store.assertOwner(job.jobId, owner);
    // A file per attempt: a stale owner that got past the check above still cannot overwrite the file that the
    // current owner's record points to (two owners reach the same step under the same checkpoint id).
    const stored = await store.outlast(`store checkpoint ${written.id}`, () => checkpoints.put(job.jobId, written.id, written.bytes, owner.attempt));
    // The results as of this checkpoint (GetJobResults): one file per attempt, overwritten at each checkpoint.
    const results = await store.outlast(`store results of ${written.id}`, () => checkpoints.put(job.jobId, "results", written.results, owner.attempt));
    const checkpoint = create(CheckpointSchema, {
      checkpointId: written.id,
      jobId: job.jobId,
      epoch: written.epoch,
      step: BigInt(written.step),
      reason,
      ...(metrics === undefined ? {} : { metrics }),
      isBest,
      location: stored.location,
      digest: stored.digest,
      sizeBytes: BigInt(stored.sizeBytes),
      createdAt: timestampNow(),
      resultsLocation: results.location,
      resultsDigest: results.digest,
    });
    // Durable first, then recorded: a crash between the two leaves an unused file, never a record without one.
    await store.update(
      job.jobId,
      (j) => {
        j.lastCheckpoint = checkpoint;
      },
      owner,
    );
    // The most dangerous point to die at: the job resumes from this checkpoint, which its list does not hold yet
    // (the next attempt lists it: see #epochs).
    this.#crashPoint("checkpoint-write");
    await this.#listCheckpoint(job, checkpoint, events);
    return checkpoint;
  }

  /** Lists a checkpoint the job's record holds, deletes the files that fell out of the kept set, and reports it. */
  async #listCheckpoint(job: Job, checkpoint: Checkpoint, events: JobEventLog): Promise<void> {
    const { store, checkpoints, checkpointList } = this.#deps;
    const removed = await store.outlast(`list checkpoint ${checkpoint.checkpointId}`, () => checkpointList.add(job.jobId, checkpoint, job.config?.checkpoint?.keepLast || 3));
    for (const old of removed) await checkpoints.delete(old.location).catch(() => undefined);
    await events.append({ case: "checkpointSaved", value: { checkpoint } });
  }

  /**
   * A publication by the job's policy, exported in the training worker: from the weights it holds when they are
   * the checkpoint's (`held`), else from the checkpoint's file (an earlier best).
   */
  async #publishFromRun(job: Job, events: JobEventLog, session: TrainingSession, checkpoint: Checkpoint, held: boolean, owner: JobOwner): Promise<void> {
    const config = job.config as TrainConfig;
    const exporter = held ? () => session.export() : async () => session.export(await this.#deps.checkpoints.get(checkpoint.location, checkpoint.digest));
    const target = { modelName: config.publish?.modelName ?? "", promote: config.publish?.skipPromotion !== true, reuseExisting: true };
    await this.#publisher.publish(exporter, this.#target(job, checkpoint.checkpointId, target), this.#publicationLog(job.jobId, events, owner));
  }

  /**
   * PublishCheckpoint: a kept checkpoint of any job through the same export → gate → registry path, in an
   * export-only worker (the checkpoint's weights and the validation set; no training set, no training graph).
   * Returns the manifest now serving (the new version unless promotion is skipped).
   */
  async publishCheckpoint(job: Job, checkpointId: string, options: { modelName: string; skipPromotion: boolean; promotedBy?: string }): Promise<{ serving: ModelManifest; previous?: ModelRef }> {
    const { store, checkpointList, checkpoints, registry } = this.#deps;
    const checkpoint = (await checkpointList.get(job.jobId)).find((c) => c.checkpointId === checkpointId);
    if (checkpoint === undefined) throw new AppError(Code.NOT_FOUND, `job ${job.jobId} keeps no checkpoint ${checkpointId}`);
    const { header, state } = decodeCheckpoint(await checkpoints.get(checkpoint.location, checkpoint.digest));
    const previous = await registry.getServing(options.modelName);
    const events = await JobEventLog.open(store, job.jobId);
    const init = { config: toBinary(TrainConfigSchema, job.config ?? create(TrainConfigSchema)), roots: this.#deps.roots, weights: state, epoch: header.epoch, step: header.step };
    const manifest = await this.#publisher.publish(
      () => exportInWorker(init, `poseloop-publish-${job.jobId}`),
      // An admin's call: it serves as asked, over the model's promotion policy (the decision log says so).
      this.#target(job, checkpointId, { modelName: options.modelName, promote: !options.skipPromotion, promotedBy: options.promotedBy ?? `job ${job.jobId}` }),
      this.#publicationLog(job.jobId, events),
    );
    if (manifest === undefined) throw new AppError(Code.FAILED_PRECONDITION, `checkpoint ${checkpointId} did not pass the int8 gate; see the job's events`);
    const serving = options.skipPromotion ? await this.#manifest(options.modelName, "") : manifest;
    return { serving, ...(previous?.record.model === undefined ? {} : { previous: create(ModelRefSchema, previous.record.model) }) };
  }

  #target(job: Job, checkpointId: string, to: { modelName: string; promote: boolean; reuseExisting?: boolean; promotedBy?: string }): PublicationTarget {
    return { jobId: job.jobId, config: job.config ?? create(TrainConfigSchema), labels: job.labels, checkpointId, ...to };
  }

  /**
   * A publication reports into the job's event log and lists its version in the job's record; a run's own
   * publication (`owner`) is made only while the run still owns the job.
   */
  #publicationLog(jobId: string, events: JobEventLog, owner?: JobOwner): PublicationLog {
    const { store } = this.#deps;
    return {
      append: (event) => events.append(event),
      recordPublished: async (model, decision) => {
        // The version is in the registry, and neither the job's record nor its events say so yet.
        if (owner !== undefined) this.#crashPoint("after-publish");
        let added = false;
        await store.update(
          jobId,
          (j) => {
            if (j.published.some((p) => p.name === model.name && p.version === model.version)) return false;
            j.published.push(model);
            if (decision !== undefined) j.promotions.push(decision);
            added = true;
            return true;
          },
          owner,
        );
        return added;
      },
      ...(owner === undefined ? {} : { claim: () => store.assertOwner(jobId, owner) }),
    };
  }

  /** Fine-tuning weights: a published version's weights file, or a checkpoint's state. */
  async #initWeights(config: TrainConfig): Promise<Uint8Array | undefined> {
    const source = config.initFrom?.source;
    if (source === undefined || source.case === undefined) return undefined;
    if (source.case === "model") {
      const manifest = await this.#manifest(source.value.name, source.value.version);
      return this.#artifact(manifest, "weights.ptw");
    }
    const { store, checkpoints } = this.#deps;
    const list = await this.#deps.checkpointList.get(source.value.jobId);
    const found = list.find((c) => c.checkpointId === source.value.checkpointId);
    if (found === undefined) {
      await store.require(source.value.jobId);
      throw new AppError(Code.NOT_FOUND, `job ${source.value.jobId} has no checkpoint ${source.value.checkpointId}`);
    }
    return decodeCheckpoint(await checkpoints.get(found.location, found.digest)).state;
  }

  async #teacher(config: TrainConfig): Promise<Uint8Array | undefined> {
    const teacher = config.distillation?.teacher;
    if (teacher === undefined) return undefined;
    const manifest = await this.#manifest(teacher.name, teacher.version);
    return this.#artifact(manifest, "model.onnx");
  }

  async #manifest(name: string, version: string): Promise<ModelManifest> {
    const { registry } = this.#deps;
    if (version !== "") return registry.getManifest(name, version);
    const serving = await registry.getServing(name);
    if (serving?.record.model === undefined) throw new AppError(Code.NOT_FOUND, `model ${name} has no serving version`);
    return registry.getManifest(name, serving.record.model.version);
  }

  async #artifact(manifest: ModelManifest, file: string): Promise<Uint8Array> {
    const artifact = manifest.artifacts.find((a) => a.objectName.endsWith(`/${file}`));
    if (artifact === undefined) throw new AppError(Code.FAILED_PRECONDITION, `${manifest.model?.name} ${manifest.model?.version} has no ${file} (published by another tool?)`);
    return this.#deps.registry.getArtifact(artifact.objectName, { expectedDigest: artifact.digest });
  }
}

/** A TCP port free on this host now, for a rendezvous store node 0 is about to host. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address !== null ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}
