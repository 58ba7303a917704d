import { fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import type { ModelRegistry } from "@poseloop/bus";
import { AppError, Code, raceAbort, type Logger } from "@poseloop/core";
import { KeypointMetricsSchema } from "@poseloop/proto/poseloop/common/v1/metrics_pb";
import { Precision } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { TrainConfigSchema, type TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import type { Checkpoint, EvaluateRequest, EvaluateResponseSchema } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { datasetProblems, type DataRoots } from "../datasets/data-root.js";
import type { CheckpointList } from "../jobs/checkpoint-list.js";
import type { CheckpointStore } from "../jobs/checkpoint-store.js";
import type { JobStore } from "../jobs/job-store.js";
import { decodeCheckpoint } from "../runner/checkpoint-file.js";
import { describeData, evaluateRequestProblems, evaluationConfig, evaluationDataProblems } from "./evaluation-request.js";
import { evaluateInWorker } from "./evaluation-session.js";
import type { EvaluationInit } from "./model-evaluation.js";

export interface EvaluationRunnerDependencies {
  readonly store: Pick<JobStore, "get" | "require">;
  readonly checkpointList: Pick<CheckpointList, "get">;
  readonly checkpoints: Pick<CheckpointStore, "get">;
  readonly registry: Pick<ModelRegistry, "getServing" | "getManifest" | "getArtifact" | "listVersions">;
  readonly roots: DataRoots;
  readonly logger: Logger;
}

type EvaluateResponseInit = MessageInitShape<typeof EvaluateResponseSchema>;

/** The model of a request, found: what to load in the worker and how the answer names it. */
interface ResolvedModel {
  readonly jobConfig: TrainConfig;
  readonly jobId: string;
  readonly model: EvaluationInit["model"];
  readonly label: string;
  readonly precision: Precision;
  readonly answer: Pick<EvaluateResponseInit, "version" | "checkpoint">;
}

const ARTIFACT_FILES = { fp32: "model.onnx", int8: "model.int8.onnx" } as const;

/**
 * Evaluate: a published version or a job's checkpoint on a dataset, in an evaluation worker, one at a time on
 * this trainer (each takes every core onnxruntime is given, as a run's validation does).
 */
export class EvaluationRunner {
  readonly #deps: EvaluationRunnerDependencies;
  /** The evaluation running now; the next waits for it. */
  #running: Promise<unknown> = Promise.resolve();

  constructor(deps: EvaluationRunnerDependencies) {
    this.#deps = deps;
  }

  async evaluate(request: EvaluateRequest, signal: AbortSignal): Promise<EvaluateResponseInit> {
    const problems = evaluateRequestProblems(request);
    if (problems.length > 0) throw AppError.invalid("evaluation request", problems);
    const resolved = await this.#resolve(request);
    const config = evaluationConfig(resolved.jobConfig, request);
    // A dataset path outside the data root throws PERMISSION_DENIED here, before anything is read.
    const dataProblems = [...evaluationDataProblems(config), ...(request.data === undefined ? [] : await datasetProblems(config, this.#deps.roots.dataRoot))];
    if (dataProblems.length > 0) throw AppError.invalid("evaluation dataset", dataProblems);
    const previous = this.#running;
    const turn = previous.then(async () => {
      const started = performance.now();
      const init: EvaluationInit = { config: toBinary(TrainConfigSchema, config), roots: this.#deps.roots, model: resolved.model, label: resolved.label };
      const outcome = await evaluateInWorker(init, signal, `poseloop-evaluate-${resolved.jobId}`);
      return { outcome, seconds: (performance.now() - started) / 1000 };
    });
    this.#running = turn.catch(() => undefined);
    // A caller that gives up while another evaluation runs leaves the queue; its own worker never starts.
    const { outcome, seconds } = await raceAbort(turn, signal);
    const metrics = fromBinary(KeypointMetricsSchema, outcome.metrics);
    this.#deps.logger.info("evaluated a model", {
      model: resolved.label,
      job_id: resolved.jobId,
      data: request.data === undefined ? "the job's validation set" : describeData(request.data),
      dataset: metrics.dataset,
      images: metrics.numImages,
      ap: metrics.ap,
      seconds,
    });
    return { ...resolved.answer, metrics, precision: resolved.precision, modelDigest: outcome.modelDigest, jobId: resolved.jobId, seconds };
  }

  async #resolve(request: EvaluateRequest): Promise<ResolvedModel> {
    const model = request.model;
    if (model.case === "version") return this.#version(model.value.name.trim(), model.value.version.trim(), request.precision);
    if (model.case === "checkpoint") return this.#checkpoint(model.value.jobId.trim(), model.value.checkpointId.trim());
    throw new AppError(Code.INVALID_ARGUMENT, "name the model: a published version or a job's checkpoint");
  }

  async #version(name: string, asked: string, precision: Precision): Promise<ResolvedModel> {
    const { registry, store } = this.#deps;
    let version = asked;
    if (version === "") {
      version = (await registry.getServing(name))?.record.model?.version ?? "";
      if (version === "") throw new AppError(Code.NOT_FOUND, `model ${name} has no serving version; name one (poseloop models ${name} lists them)`);
    } else if (!(await registry.listVersions(name)).includes(version)) {
      throw new AppError(Code.NOT_FOUND, `model ${name} has no version ${version}`);
    }
    const manifest = await registry.getManifest(name, version);
    const wanted = precision === Precision.UNSPECIFIED ? manifest.precision : precision;
    const file = wanted === Precision.INT8 ? ARTIFACT_FILES.int8 : ARTIFACT_FILES.fp32;
    const artifact = manifest.artifacts.find((a) => a.objectName.endsWith(`/${file}`));
    if (artifact === undefined) throw new AppError(Code.FAILED_PRECONDITION, `${name}@${version} has no ${wanted === Precision.INT8 ? "int8" : "fp32"} model (${file})`);
    const job = manifest.trainingJobId === "" ? undefined : await store.get(manifest.trainingJobId);
    if (job?.job.config === undefined) {
      // The job's config is the model's contract (architecture, input, codec) and its TEST.* settings.
      throw new AppError(Code.FAILED_PRECONDITION, `${name}@${version} names no training job this trainer knows${manifest.trainingJobId === "" ? "" : ` (${manifest.trainingJobId})`}: its validation settings are unknown`);
    }
    const onnx = await registry.getArtifact(artifact.objectName, { expectedDigest: artifact.digest });
    return {
      jobConfig: job.job.config,
      jobId: job.job.jobId,
      model: { onnx },
      label: `${name}@${version}`,
      precision: wanted === Precision.INT8 ? Precision.INT8 : Precision.FP32,
      answer: { version: { name, version, digest: artifact.digest } },
    };
  }

  async #checkpoint(jobId: string, asked: string): Promise<ResolvedModel> {
    const { store, checkpointList, checkpoints } = this.#deps;
    const { job } = await store.require(jobId);
    const kept = await checkpointList.get(jobId);
    const checkpoint: Checkpoint | undefined = asked === "" ? (kept.findLast((c) => c.isBest) ?? kept.at(-1)) : kept.find((c) => c.checkpointId === asked);
    if (checkpoint === undefined) throw new AppError(Code.NOT_FOUND, asked === "" ? `job ${jobId} keeps no checkpoint yet` : `job ${jobId} keeps no checkpoint ${asked}`);
    if (job.config === undefined) throw new AppError(Code.FAILED_PRECONDITION, `job ${jobId} has no config`);
    const { state } = decodeCheckpoint(await checkpoints.get(checkpoint.location, checkpoint.digest));
    return {
      jobConfig: job.config,
      jobId,
      model: { state },
      label: `${jobId}/${checkpoint.checkpointId}`,
      precision: Precision.FP32,
      answer: { checkpoint: { jobId, checkpointId: checkpoint.checkpointId } },
    };
  }
}
