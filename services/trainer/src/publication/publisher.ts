import { create, fromBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { SpanKind, trace } from "@opentelemetry/api";
import type { ModelRegistry } from "@poseloop/bus";
import { AppError, Code, type Logger } from "@poseloop/core";
import { KeypointMetricsSchema, type KeypointMetrics } from "@poseloop/proto/poseloop/common/v1/metrics_pb";
import { ModelManifestSchema, ModelRefSchema, Precision, QuantizationSummarySchema, type ModelManifest, type ModelRef } from "@poseloop/proto/poseloop/common/v1/model_pb";
import type { TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import type { PromotionDecision } from "@poseloop/proto/poseloop/registry/v1/registry_pb";
import type { JobEventSchema } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { withSpan } from "@poseloop/telemetry";
import { servingManifest } from "../experiment/model-contract.js";
import { recordValidationAp } from "../trainer-metrics.js";
import type { ExportOutcome } from "./model-export.js";
import { PromotionGate, type Candidate, type PromotionPlan } from "./promotion.js";

const tracer = () => trace.getTracer("@poseloop/trainer");

/** Labels the trainer writes into every manifest it publishes: where the version came from. */
export const PROVENANCE_LABELS: readonly string[] = ["experiment", "checkpoint"];
const LABEL_KEY = /^[a-z0-9]([a-z0-9._/-]{0,62})$/i;
const MAX_LABELS = 64;
const MAX_LABEL_VALUE = 256;

/**
 * Problems with a job's labels: they end up in the manifests the job publishes, next to the trainer's own
 * provenance, which a client must not be able to forge ("checkpoint: e9999-forged").
 */
export function labelProblems(labels: Readonly<Record<string, string>>): string[] {
  const problems: string[] = [];
  const entries = Object.entries(labels);
  if (entries.length > MAX_LABELS) problems.push(`labels: ${entries.length} labels; the limit is ${MAX_LABELS}`);
  for (const [key, value] of entries.slice(0, MAX_LABELS)) {
    const shown = JSON.stringify(key.length > 40 ? `${key.slice(0, 37)}...` : key);
    if (PROVENANCE_LABELS.includes(key.toLowerCase()) || key.toLowerCase().startsWith("poseloop")) {
      problems.push(`labels: ${shown} is set by the trainer itself (the provenance of a published model), not by a client`);
    } else if (!LABEL_KEY.test(key)) {
      problems.push(`labels: ${shown} must be 1-63 letters, digits, '.', '_', '/' or '-', starting with a letter or digit`);
    }
    if (value.length > MAX_LABEL_VALUE) problems.push(`labels: the value of ${shown} is ${value.length} characters; the limit is ${MAX_LABEL_VALUE}`);
  }
  return problems;
}

/** What is published, from which job and checkpoint, under which name. */
export interface PublicationTarget {
  readonly jobId: string;
  /** The job's resolved config: its model contract, quantization settings and name. */
  readonly config: TrainConfig;
  readonly labels: Readonly<Record<string, string>>;
  readonly checkpointId: string;
  readonly modelName: string;
  /** Make the new version the serving one: by the model's promotion policy, unless `promotedBy` says otherwise. */
  readonly promote: boolean;
  /**
   * Who promotes it by hand, over the model's promotion policy (PublishCheckpoint: an admin's call). Unset, a
   * job's own publication: the policy decides whether it serves.
   */
  readonly promotedBy?: string;
  /**
   * A job's own publication by its policy, which a takeover repeats when its owner died between the registry
   * write and the record: a version already published from this job and checkpoint is reused (recorded, not
   * exported, published or promoted again). PublishCheckpoint leaves it unset: asking again makes a new version.
   */
  readonly reuseExisting?: boolean;
}

/**
 * Where a publication reports to: the job's event log and its record. The jobs layer implements it, so this
 * module never reaches up into job storage.
 */
export interface PublicationLog {
  append(event: MessageInitShape<typeof JobEventSchema>["event"]): Promise<unknown>;
  /**
   * The version is in the registry; the job's record lists it, with the promotion decision made for it. False
   * when it listed it already.
   */
  recordPublished(model: ModelRef, decision?: PromotionDecision): Promise<boolean | void>;
  /** Called right before the registry write; throws when the publication is no longer the caller's to make. */
  claim?(): Promise<void>;
}

function metricsOf(bytes: Uint8Array | undefined): KeypointMetrics | undefined {
  return bytes === undefined ? undefined : fromBinary(KeypointMetricsSchema, bytes);
}

/**
 * The service-thread half of a publication: runs the export → int8 → AP gate in the worker that has the weights
 * (`exporter`: the training run's current state, or an export-only worker's checkpoint), then writes the
 * version into the registry with its manifest. A failed gate publishes nothing and says why.
 */
export class Publisher {
  readonly #registry: ModelRegistry;
  readonly #logger: Logger;
  readonly #promotion: PromotionGate;

  /** `promotion`: how publications that ask to be promoted meet the model's policy (default: without evaluations). */
  constructor(registry: ModelRegistry, logger: Logger, promotion?: PromotionGate) {
    this.#registry = registry;
    this.#logger = logger;
    this.#promotion = promotion ?? new PromotionGate({ registry, logger });
  }

  /** The manifest of the new version, or undefined when the int8 gate refused every attempt. */
  async publish(exporter: () => Promise<ExportOutcome>, target: PublicationTarget, log: PublicationLog): Promise<ModelManifest | undefined> {
    const { jobId, config, checkpointId, modelName } = target;
    if (target.reuseExisting === true) {
      const existing = await this.#findPublished(modelName, jobId, checkpointId);
      if (existing !== undefined) {
        // The earlier owner's decision when it kept one, else the one it did not get to make: never a second.
        const decision = target.promote ? await this.#promotion.settle(existing, this.#candidate(target, existing.metrics, () => this.#servedModel(existing))) : undefined;
        if ((await log.recordPublished(create(ModelRefSchema, existing.model ?? {}), decision)) !== false) {
          const serving = await this.#registry.getServing(modelName);
          const promoted = serving?.record.model?.version === existing.model?.version;
          await log.append({ case: "published", value: { manifest: existing, promoted, checkpointId, ...(decision === undefined ? {} : { decision }) } });
        }
        this.#logger.info("reusing the version already published from this checkpoint", { job_id: jobId, model: modelName, version: existing.model?.version, checkpoint: checkpointId });
        return existing;
      }
    }
    const started = Date.now();
    const outcome = await withSpan(tracer(), "training.export", { attributes: { "poseloop.training.job_id": jobId, "poseloop.training.checkpoint_id": checkpointId } }, async (span) => {
      const result = await exporter();
      span.setAttribute("poseloop.model.fp32_bytes", result.sizes.fp32);
      span.setAttribute("poseloop.model.int8_bytes", result.sizes.int8);
      return result;
    });
    const fp32Metrics = metricsOf(outcome.fp32Metrics);
    const int8Metrics = metricsOf(outcome.int8Metrics);
    // The gate's two APs of the same weights, refused or not: how much int8 costs this model.
    if (fp32Metrics !== undefined) recordValidationAp({ jobId, modelName }, fp32Metrics.ap, "fp32");
    if (int8Metrics !== undefined) recordValidationAp({ jobId, modelName }, int8Metrics.ap, "int8");
    if (outcome.gate !== undefined) {
      const gate = outcome.gate;
      tracer()
        .startSpan("training.quantize", { startTime: started, attributes: { "poseloop.training.job_id": jobId, "poseloop.quant.passed": gate.passed, "poseloop.quant.attempts": gate.attempts.length } })
        .end();
      await log.append({ case: "quantization", value: { attempts: gate.attempts, passed: gate.passed, maxApDrop: gate.maxApDrop, message: gate.message } });
      if (!gate.passed) {
        await log.append({ case: "warning", value: { code: "gate_failed", message: `nothing published from ${checkpointId}: ${gate.message}` } });
        this.#logger.warn("int8 gate failed; nothing published", { job_id: jobId, checkpoint: checkpointId, message: gate.message });
        return undefined;
      }
    }
    const int8 = outcome.int8;
    const precision = int8 === undefined ? Precision.FP32 : Precision.INT8;
    const accepted = outcome.gate?.attempts.find((a) => a.passed);
    const quantization = config.quantization;
    const manifest = create(ModelManifestSchema, servingManifest(config, precision));
    manifest.model = create(ModelRefSchema, { name: modelName });
    const served = int8Metrics ?? fp32Metrics;
    if (served !== undefined) manifest.metrics = served;
    if (fp32Metrics !== undefined) manifest.fp32Metrics = fp32Metrics;
    manifest.trainingJobId = jobId;
    manifest.parentVersion = config.initFrom?.source.case === "model" ? config.initFrom.source.value.version : "";
    manifest.epoch = outcome.epoch;
    manifest.step = BigInt(outcome.step);
    // Provenance last: a job's labels never overwrite it (jobs submitted before labels were checked included).
    manifest.labels = { ...target.labels, experiment: config.name, checkpoint: checkpointId };
    if (accepted !== undefined && quantization !== undefined) {
      manifest.quantization = create(QuantizationSummarySchema, {
        calibrator: accepted.calibrator,
        calibrationSamples: quantization.calibrationSamples,
        fp32Nodes: [...quantization.fp32Nodes],
        apDrop: (accepted.fp32Ap - accepted.int8Ap) * 100,
        maxApDrop: quantization.maxApDrop,
        weightRange: outcome.gate?.weightRange ?? 0,
      });
    }
    const files = [
      { file: "model.onnx", data: outcome.fp32, precision: Precision.FP32 },
      { file: "weights.ptw", data: outcome.weights, precision: Precision.FP32 },
      ...(int8 === undefined ? [] : [{ file: "model.int8.onnx", data: int8, precision: Precision.INT8 }]),
    ];
    // Decided before the registry write, so that a promotion stays the one atomic write it was; the decision
    // is kept right after it (a retry that finds the version without one decides then: see settle).
    const servedBytes = int8 ?? outcome.fp32;
    const plan = await this.#plan(target, manifest.metrics, async () => servedBytes);
    await log.claim?.();
    const published = await withSpan(tracer(), "training.publish", { kind: SpanKind.PRODUCER, attributes: { "poseloop.training.job_id": jobId, "poseloop.model.name": modelName } }, async (span) => {
      const promote = plan?.promote ?? false;
      const result = await this.#registry.publish({ manifest, files, servingFile: int8 === undefined ? "model.onnx" : "model.int8.onnx", promote, setBy: jobId, reason: `${config.name}: ${checkpointId}` });
      span.setAttribute("poseloop.model.version", result.manifest.model?.version ?? "");
      return result;
    });
    const ref = create(ModelRefSchema, published.manifest.model ?? {});
    const decision = plan === undefined ? undefined : await this.#promotion.record(plan, ref, published.serving !== undefined);
    await log.recordPublished(ref, decision);
    await log.append({ case: "published", value: { manifest: published.manifest, promoted: published.serving !== undefined, checkpointId, ...(decision === undefined ? {} : { decision }) } });
    this.#logger.info("published a model version", {
      job_id: jobId,
      model: modelName,
      version: ref.version,
      promoted: published.serving !== undefined,
      ap: published.manifest.metrics?.ap,
      fp32_ap: fp32Metrics?.ap,
      ...(decision === undefined ? {} : { promotion: decision.reason }),
    });
    return published.manifest;
  }

  /** What promoting the publication means: nothing asked, an override by hand, or the policy's decision. */
  async #plan(target: PublicationTarget, metrics: KeypointMetrics | undefined, model: () => Promise<Uint8Array>): Promise<PromotionPlan | undefined> {
    if (!target.promote) return undefined;
    if (target.promotedBy !== undefined) {
      return this.#promotion.overridePlan(target.modelName, target.promotedBy, `published from ${target.jobId}/${target.checkpointId} and promoted by hand, over the policy`);
    }
    return this.#promotion.plan(this.#candidate(target, metrics, model));
  }

  #candidate(target: PublicationTarget, metrics: KeypointMetrics | undefined, model: () => Promise<Uint8Array>): Candidate {
    return { modelName: target.modelName, jobId: target.jobId, checkpointId: target.checkpointId, config: target.config, metrics, model };
  }

  /** The artifact a published version serves (int8 when it passed the gate), its digest checked. */
  async #servedModel(manifest: ModelManifest): Promise<Uint8Array> {
    const artifact = manifest.artifacts.find((a) => a.digest === manifest.model?.digest) ?? manifest.artifacts.find((a) => a.objectName.endsWith("/model.onnx"));
    if (artifact === undefined) throw new AppError(Code.FAILED_PRECONDITION, `${manifest.model?.name}@${manifest.model?.version} lists no served artifact`);
    return this.#registry.getArtifact(artifact.objectName, { expectedDigest: artifact.digest });
  }

  /** The version of `modelName` published from `jobId`'s checkpoint `checkpointId`, newest first; none: undefined. */
  async #findPublished(modelName: string, jobId: string, checkpointId: string): Promise<ModelManifest | undefined> {
    const versions = await this.#registry.listVersions(modelName);
    for (const version of versions.reverse()) {
      const manifest = await this.#registry.getManifest(modelName, version);
      if (manifest.trainingJobId === jobId && manifest.labels["checkpoint"] === checkpointId) return manifest;
    }
    return undefined;
  }
}
