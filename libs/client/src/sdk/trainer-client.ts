import type { MessageInitShape } from "@bufbuild/protobuf";
import { AppError, Code, sleep } from "@poseloop/core";
import { createClient, type ClientControls, type MethodsOf, type ServiceClient } from "@poseloop/grpc";
import { Precision, type ModelRef } from "@poseloop/proto/poseloop/common/v1/model_pb";
import type { PromotionDecision, PromotionPolicy, PromotionPolicySchema } from "@poseloop/proto/poseloop/registry/v1/registry_pb";
import type { DataSpecSchema } from "@poseloop/proto/poseloop/common/v1/dataset_pb";
import type { TrainConfigSchema } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import {
  TrainerService,
  type Checkpoint,
  type StartSweepRequestSchema,
  type Sweep,
  type EvaluateResponse,
  type ExportModelResponse,
  type ImportModelResponse,
  type GetJobResultsResponse,
  type GetPromotionPolicyResponse,
  type GetTrainerInfoResponse,
  type Job,
  type JobEvent,
  type JobState,
  type ListJobsResponse,
  type PublishCheckpointResponse,
  type StartTrainingResponse,
} from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import {
  DEFAULT_TRAINER_ADDRESS,
  inService,
  resolveConnection,
  toCallOptions,
  type ConnectionOptions,
  type RequestOptions,
  type ResolvedConnection,
} from "./client-options.js";

/** What to train: an experiment file's text or a TrainConfig, with overrides, exactly one source. */
export interface StartTrainingOptions extends RequestOptions {
  /** An experiment file (YAML, HRNet layout); the trainer converts and validates it. */
  experimentYaml?: string;
  config?: MessageInitShape<typeof TrainConfigSchema>;
  /** Experiment-file keys over the source, e.g. { "TRAIN.LR": 0.0005, "TRAIN.END_EPOCH": 20 }. */
  overrides?: Readonly<Record<string, string | number | boolean>>;
  /** The same key within a day returns the job it created first instead of starting another. */
  idempotencyKey?: string;
  labels?: Readonly<Record<string, string>>;
}

export interface WatchJobOptions extends RequestOptions {
  /** Replay events after this sequence number (0, the default: from the first event). */
  afterSequence?: bigint | number;
  /** Leave out progress events. */
  skipProgress?: boolean;
  /**
   * Reconnects after the trainer went away mid-watch (UNAVAILABLE), continuing after the last event seen:
   * this many times in a row, waiting `delayMs` doubled each time (capped at 5 s). Default 5 and 500 ms.
   * A watch that never received an event fails at once.
   */
  reconnect?: { attempts?: number; delayMs?: number };
}

export interface ListJobsOptions extends RequestOptions {
  /** Default 50 (the server's), at most 500. */
  pageSize?: number;
  pageToken?: string;
  /** Only jobs in these states. */
  states?: readonly JobState[];
}

export interface PublishCheckpointOptions extends RequestOptions {
  jobId: string;
  checkpointId: string;
  /** Default: the job's publish model name. */
  modelName?: string;
  /** Upload and announce without making it the serving version. */
  skipPromotion?: boolean;
  /** Why; kept in the registry's history. */
  reason?: string;
}

/** What Evaluate measures: exactly one of `model` and `checkpoint`, on a dataset, with TEST.* choices. */
export interface EvaluateOptions extends RequestOptions {
  /** A published version; without `version` (or with ""), the one serving now. */
  model?: { name: string; version?: string };
  /** A job's checkpoint; without `checkpointId`, the job's best, else its last. Evaluated in fp32. */
  checkpoint?: { jobId: string; checkpointId?: string };
  /**
   * The dataset as a training config names it (a COCO dataset's val_annotations and val_images under the
   * trainer's data root, or a synthetic set); default: the validation set of the job that trained the model.
   */
  data?: MessageInitShape<typeof DataSpecSchema>;
  /** TEST.FLIP_TEST and TEST.USE_GT_BBOX; default: as the model's job validated. */
  flipTest?: boolean;
  useGtBoxes?: boolean;
  /** Evaluate the first N images only; default all. */
  maxImages?: number;
  /** A version's artifact: the served one (default: int8 when it passed the gate), or this precision. */
  precision?: "fp32" | "int8";
}

/** A model made elsewhere and its manifest, with the optional int8 quantization and AP gate (ImportModelRequest). */
export interface ImportModelOptions extends RequestOptions {
  modelName: string;
  /** The ONNX file's bytes. */
  model: Uint8Array;
  /** The manifest in PoseLoop's YAML format. */
  manifestYaml: string;
  quantize?: boolean;
  /** COCO-format keypoint sets under the trainer's data root (DataSpec, as a training config names one). */
  calibration?: MessageInitShape<typeof DataSpecSchema>;
  validation?: MessageInitShape<typeof DataSpecSchema>;
  minAp?: number;
  maxApDrop?: number;
  skipPromotion?: boolean;
  reason?: string;
  labels?: Readonly<Record<string, string>>;
}

/**
 * TrainerService with friendly arguments: jobs, their events, checkpoints and publications. Every call
 * carries the bearer token and a deadline; errors are AppErrors with the trainer's code and problem list.
 */
/**
 * A hyper-parameter sweep: the experiment file every trial starts from and the swept keys (one stage), or
 * stages run in order ("lr", "batch", "aug" take default values when they name none). See StartSweepRequest.
 */
export type StartSweepOptions = RequestOptions & Omit<MessageInitShape<typeof StartSweepRequestSchema>, "$typeName">;

export class TrainerClient {
  readonly address: string;
  readonly #connection: ResolvedConnection;
  readonly #client: ServiceClient<MethodsOf<typeof TrainerService>> & ClientControls;

  constructor(options: ConnectionOptions = {}) {
    this.#connection = resolveConnection(options, DEFAULT_TRAINER_ADDRESS);
    this.address = this.#connection.address;
    this.#client = createClient(TrainerService, this.address, this.#connection.client);
  }

  /** Validates the config on the trainer (every problem in one INVALID_ARGUMENT) and queues the job. */
  async startTraining(options: StartTrainingOptions): Promise<StartTrainingResponse> {
    const hasYaml = options.experimentYaml !== undefined;
    const hasConfig = options.config !== undefined;
    if (hasYaml === hasConfig) {
      throw new AppError(Code.INVALID_ARGUMENT, "startTraining needs exactly one of experimentYaml and config");
    }
    const overrides = Object.fromEntries(Object.entries(options.overrides ?? {}).map(([key, value]) => [key, String(value)]));
    return this.#unary(() =>
      this.#client.startTraining(
        {
          source: hasYaml ? { case: "experimentYaml", value: options.experimentYaml! } : { case: "config", value: options.config! },
          overrides,
          idempotencyKey: options.idempotencyKey ?? "",
          labels: { ...options.labels },
        },
        this.#call(options),
      ),
    );
  }

  /**
   * The job's events so far (after `afterSequence`), then live ones; the iteration ends when the job does.
   * Breaking out of the loop cancels the watch.
   */
  async *watchJob(jobId: string, options: WatchJobOptions = {}): AsyncGenerator<JobEvent, void, undefined> {
    let after = BigInt(options.afterSequence ?? 0);
    const attempts = options.reconnect?.attempts ?? 5;
    const baseDelayMs = options.reconnect?.delayMs ?? 500;
    let received = false;
    let failures = 0;
    for (;;) {
      try {
        const responses = this.#client.watchJob({ jobId, afterSequence: after, skipProgress: options.skipProgress ?? false }, this.#call(options));
        for await (const response of responses) {
          const event = response.event;
          if (event === undefined) continue;
          received = true;
          failures = 0;
          after = event.sequence;
          yield event;
        }
        return;
      } catch (error) {
        const retryable = received && AppError.is(error, Code.UNAVAILABLE) && options.signal?.aborted !== true;
        if (!retryable || failures >= attempts) throw inService(error, "trainer", this.address);
        await sleep(Math.min(5_000, baseDelayMs * 2 ** failures), options.signal);
        failures++;
      }
    }
  }

  async getJob(jobId: string, options: RequestOptions = {}): Promise<Job> {
    const response = await this.#unary(() => this.#client.getJob({ jobId }, this.#call(options)));
    return required(response.job, "GetJob");
  }

  /** One page of jobs, newest first; pass `nextPageToken` back as `pageToken` for the next. */
  async listJobs(options: ListJobsOptions = {}): Promise<ListJobsResponse> {
    return this.#unary(() =>
      this.#client.listJobs(
        { pageSize: options.pageSize ?? 0, pageToken: options.pageToken ?? "", states: [...(options.states ?? [])] },
        this.#call(options),
      ),
    );
  }

  /** Asks the job to stop at its next step boundary; its last checkpoint is kept. */
  async cancelJob(jobId: string, options: RequestOptions & { reason?: string } = {}): Promise<Job> {
    const response = await this.#unary(() => this.#client.cancelJob({ jobId, reason: options.reason ?? "" }, this.#call(options)));
    return required(response.job, "CancelJob");
  }

  /** Queues a cancelled or failed job again from its last checkpoint, optionally to another end epoch. */
  async resumeJob(jobId: string, options: RequestOptions & { endEpoch?: number } = {}): Promise<Job> {
    const response = await this.#unary(() => this.#client.resumeJob({ jobId, endEpoch: options.endEpoch ?? 0 }, this.#call(options)));
    return required(response.job, "ResumeJob");
  }

  /** The job's checkpoints, oldest first. */
  async listCheckpoints(jobId: string, options: RequestOptions = {}): Promise<Checkpoint[]> {
    const response = await this.#unary(() => this.#client.listCheckpoints({ jobId }, this.#call(options)));
    return response.checkpoints;
  }

  /** The job's results as of its last checkpoint: results.csv (a row per epoch) and PNG plots of its curves. */
  async getJobResults(jobId: string, options: RequestOptions = {}): Promise<GetJobResultsResponse> {
    return this.#unary(() => this.#client.getJobResults({ jobId }, this.#call(options)));
  }

  /** Validates every trial of the sweep (every problem in one INVALID_ARGUMENT) and starts it. */
  async startSweep(options: StartSweepOptions): Promise<Sweep> {
    const { timeoutMs: _timeout, signal: _signal, headers: _headers, ...request } = options;
    const response = await this.#unary(() => this.#client.startSweep(request, this.#call(options)));
    return this.#sweepOf(response.sweep);
  }

  async getSweep(sweepId: string, options: RequestOptions = {}): Promise<Sweep> {
    return this.#sweepOf((await this.#unary(() => this.#client.getSweep({ sweepId }, this.#call(options)))).sweep);
  }

  /** The sweep with PNG plots of best AP against each swept key's values ("ap-vs-<key>.png"). */
  async getSweepPlots(sweepId: string, options: RequestOptions = {}): Promise<{ sweep: Sweep; plots: { name: string; png: Uint8Array }[] }> {
    const response = await this.#unary(() => this.#client.getSweep({ sweepId, includePlots: true }, this.#call(options)));
    return { sweep: this.#sweepOf(response.sweep), plots: response.plots.map((p) => ({ name: p.name, png: p.png })) };
  }

  /** Every sweep, newest first. */
  async listSweeps(options: RequestOptions = {}): Promise<Sweep[]> {
    return (await this.#unary(() => this.#client.listSweeps({}, this.#call(options)))).sweeps;
  }

  /** The sweep now, then at every change (a trial queued, an epoch validated, a trial stopped), until it ends. */
  async *watchSweep(sweepId: string, options: RequestOptions = {}): AsyncGenerator<Sweep, void, undefined> {
    try {
      for await (const response of this.#client.watchSweep({ sweepId }, this.#call(options))) if (response.sweep !== undefined) yield response.sweep;
    } catch (error) {
      throw inService(error, "trainer", this.address);
    }
  }

  /** Cancels the sweep's queued and running trials and ends it. */
  async cancelSweep(sweepId: string, options: RequestOptions & { reason?: string } = {}): Promise<Sweep> {
    return this.#sweepOf((await this.#unary(() => this.#client.cancelSweep({ sweepId, reason: options.reason ?? "" }, this.#call(options)))).sweep);
  }

  #sweepOf(sweep: Sweep | undefined): Sweep {
    if (sweep === undefined) throw new AppError(Code.INTERNAL, `the trainer at ${this.address} answered without a sweep`);
    return sweep;
  }

  /**
   * What this trainer can train (engines, devices, GPUs) and what the other live trainers of its bus can:
   * `trainer` is the one that answered, `others` those whose advertisement is fresh, by worker id.
   */
  async getTrainerInfo(options: RequestOptions = {}): Promise<GetTrainerInfoResponse> {
    return this.#unary(() => this.#client.getTrainerInfo({}, this.#call(options)));
  }

  /** Publishes a checkpoint as a new model version (and makes it serve, unless `skipPromotion`). */
  async publishCheckpoint(options: PublishCheckpointOptions): Promise<PublishCheckpointResponse> {
    const { jobId, checkpointId } = options;
    return this.#unary(() =>
      this.#client.publishCheckpoint(
        {
          target: {
            case: "checkpoint",
            value: { jobId, checkpointId, modelName: options.modelName ?? "", skipPromotion: options.skipPromotion ?? false },
          },
          reason: options.reason ?? "",
        },
        this.#call(options),
      ),
    );
  }

  /**
   * COCO keypoint AP of a published version or a job's checkpoint, measured as the trainer validates (the same
   * pipeline, so a model on its job's own validation set gets the AP the job recorded). It takes as long as a
   * validation pass: give `timeoutMs` accordingly.
   */
  async evaluate(options: EvaluateOptions): Promise<EvaluateResponse> {
    if ((options.model === undefined) === (options.checkpoint === undefined)) {
      throw new AppError(Code.INVALID_ARGUMENT, "evaluate needs exactly one of model and checkpoint");
    }
    const model =
      options.model !== undefined
        ? { case: "version" as const, value: { name: options.model.name, version: options.model.version ?? "" } }
        : { case: "checkpoint" as const, value: { jobId: options.checkpoint!.jobId, checkpointId: options.checkpoint!.checkpointId ?? "" } };
    const precision = options.precision === undefined ? Precision.UNSPECIFIED : options.precision === "int8" ? Precision.INT8 : Precision.FP32;
    return this.#unary(() =>
      this.#client.evaluate(
        {
          model,
          precision,
          maxImages: options.maxImages ?? 0,
          ...(options.data === undefined ? {} : { data: options.data }),
          ...(options.flipTest === undefined ? {} : { flipTest: options.flipTest }),
          ...(options.useGtBoxes === undefined ? {} : { useGtBoxes: options.useGtBoxes }),
        },
        this.#call(options),
      ),
    );
  }

  /** A model name's promotion policy (ALWAYS, `isDefault`, when none was set) and its canary or shadow trial, if any. */
  async getPromotionPolicy(modelName: string, options: RequestOptions = {}): Promise<GetPromotionPolicyResponse> {
    return this.#unary(() => this.#client.getPromotionPolicy({ modelName }, this.#call(options)));
  }

  /**
   * Sets a model name's promotion policy (admin role), the whole of it: a field left out takes its default.
   * `referenceExperimentYaml`: an experiment file whose DATASET section is the if-better reference set. Every
   * problem of the policy comes back in one INVALID_ARGUMENT.
   */
  async setPromotionPolicy(
    modelName: string,
    policy: MessageInitShape<typeof PromotionPolicySchema>,
    options: RequestOptions & { referenceExperimentYaml?: string } = {},
  ): Promise<PromotionPolicy> {
    const response = await this.#unary(() =>
      this.#client.setPromotionPolicy({ modelName, policy, referenceExperimentYaml: options.referenceExperimentYaml ?? "" }, this.#call(options)),
    );
    if (response.policy === undefined) throw new AppError(Code.INTERNAL, "SetPromotionPolicy answered without the policy");
    return response.policy;
  }

  /**
   * Imports a model exported elsewhere as a new version of `modelName` (admin role): its bytes and the manifest
   * YAML in one request (at most the trainer's gRPC message limit). Every problem of the model against its
   * manifest comes back in one INVALID_ARGUMENT; nothing is published then.
   */
  async importModel(options: ImportModelOptions): Promise<ImportModelResponse> {
    const { model, manifestYaml, modelName } = options;
    return this.#unary(() =>
      this.#client.importModel(
        {
          modelName,
          model,
          manifestYaml,
          quantize: options.quantize ?? false,
          minAp: options.minAp ?? 0,
          ...(options.maxApDrop === undefined ? {} : { maxApDrop: options.maxApDrop }),
          skipPromotion: options.skipPromotion ?? false,
          reason: options.reason ?? "",
          labels: { ...options.labels },
          ...(options.calibration === undefined ? {} : { calibration: options.calibration }),
          ...(options.validation === undefined ? {} : { validation: options.validation }),
        },
        this.#call(options),
      ),
    );
  }

  /** A published version's model file and its manifest YAML (the one serving now when `version` is empty). */
  async exportModel(name: string, options: RequestOptions & { version?: string; precision?: "fp32" | "int8" } = {}): Promise<ExportModelResponse> {
    const precision = options.precision === undefined ? Precision.UNSPECIFIED : options.precision === "int8" ? Precision.INT8 : Precision.FP32;
    return this.#unary(() => this.#client.exportModel({ version: { name, version: options.version ?? "" }, precision }, this.#call(options)));
  }

  /** The model name's promotion decisions the registry still keeps, newest first. */
  async listPromotionDecisions(modelName: string, options: RequestOptions = {}): Promise<PromotionDecision[]> {
    const response = await this.#unary(() => this.#client.listPromotionDecisions({ modelName }, this.#call(options)));
    return response.decisions;
  }

  /** Makes the version that served before the current one serve again. */
  async rollback(modelName: string, options: RequestOptions & { reason?: string } = {}): Promise<PublishCheckpointResponse> {
    return this.#unary(() =>
      this.#client.publishCheckpoint({ target: { case: "rollbackModelName", value: modelName }, reason: options.reason ?? "" }, this.#call(options)),
    );
  }

  /** Makes an already-published version serve. */
  async setServingVersion(
    version: Pick<ModelRef, "name" | "version"> & { digest?: string },
    options: RequestOptions & { reason?: string } = {},
  ): Promise<PublishCheckpointResponse> {
    return this.#unary(() =>
      this.#client.publishCheckpoint(
        { target: { case: "version", value: { name: version.name, version: version.version, digest: version.digest ?? "" } }, reason: options.reason ?? "" },
        this.#call(options),
      ),
    );
  }

  /** Waits until the channel is connected, or fails with UNAVAILABLE after `timeoutMs`. */
  async ready(timeoutMs: number): Promise<void> {
    await this.#unary(() => this.#client.$waitForReady(timeoutMs));
  }

  /** Closes the channel; open calls are cancelled. */
  close(): void {
    this.#client.$close();
  }

  #call(options: RequestOptions) {
    return toCallOptions(this.#connection, options);
  }

  async #unary<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      throw inService(error, "trainer", this.address);
    }
  }
}

function required<T>(value: T | undefined, method: string): T {
  if (value === undefined) throw new AppError(Code.INTERNAL, `${method} answered without a job`);
  return value;
}
