import { createHash } from "node:crypto";
import { clone, create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { policyMode, type KeyValueStore, type ModelRegistry } from "@poseloop/bus";
import { AppError, Code, type Logger } from "@poseloop/core";
import { KeypointMetricsSchema, type KeypointMetrics } from "@poseloop/proto/poseloop/common/v1/metrics_pb";
import { ModelRefSchema, type ModelManifest, type ModelRef } from "@poseloop/proto/poseloop/common/v1/model_pb";
import {
  type PromotionDecisionSchema,
  PromotionMode,
  PromotionVerdict,
  type PromotionDecision,
  type PromotionPolicy,
} from "@poseloop/proto/poseloop/registry/v1/registry_pb";
import { DataSpecSchema, DatasetKind, type DataSpec } from "@poseloop/proto/poseloop/common/v1/dataset_pb";
import { TrainConfigSchema, type TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { EvaluateRequestSchema, type EvaluateRequest, type EvaluateResponseSchema } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import type { DataRoots } from "../datasets/data-root.js";
import { describeData, evaluationConfig } from "../evaluation/evaluation-request.js";
import { evaluateInWorker } from "../evaluation/evaluation-session.js";
import type { EvaluationInit, EvaluationOutcome } from "../evaluation/model-evaluation.js";

/** The trainer's KV bucket of APs measured on reference sets, by version and set (see ReferenceApCache). */
export const REFERENCE_AP_BUCKET = "poseloop-reference-aps";

/**
 * An if-better comparison's evaluation: the dataset and the TEST.* choices both versions are measured with.
 * Without a reference set in the policy, the candidate job's own validation set and settings: its manifest AP
 * was measured on it by the same pipeline, so only the serving version needs measuring.
 */
export interface ReferenceSet {
  readonly data: DataSpec;
  readonly flipTest: boolean;
  readonly useGtBoxes: boolean;
  readonly maxImages: number;
  /** The policy's own set (true), or the candidate job's validation set. */
  readonly fromPolicy: boolean;
  /** What the decision names it by. */
  readonly name: string;
}

/** The set an if-better policy compares on for a candidate trained with `config`. */
export function referenceSetOf(policy: PromotionPolicy | undefined, config: TrainConfig): ReferenceSet {
  const validation = config.validation;
  const named = policy?.referenceSet;
  if (named === undefined || named.kind === DatasetKind.UNSPECIFIED) {
    const data = clone(DataSpecSchema, config.data ?? create(DataSpecSchema));
    return {
      data,
      flipTest: validation?.flipTest ?? false,
      useGtBoxes: validation?.useGtBoxes ?? false,
      maxImages: validation?.maxImages ?? 0,
      fromPolicy: false,
      name: `${describeData(data)}, the validation set of the candidate's job`,
    };
  }
  // A reference set is compared on whole; people are cropped by their labelled boxes unless it has detections.
  const detections = named.kind === DatasetKind.COCO && (named.coco?.valDetections ?? "") !== "";
  return {
    data: clone(DataSpecSchema, named),
    flipTest: validation?.flipTest ?? false,
    useGtBoxes: detections ? (validation?.useGtBoxes ?? false) : true,
    maxImages: 0,
    fromPolicy: true,
    name: describeData(named),
  };
}

/** The Evaluate request measuring `model` on the reference set, as `poseloop val` would ask for it. */
export function referenceRequest(model: Pick<ModelRef, "name" | "version">, reference: ReferenceSet): EvaluateRequest {
  return create(EvaluateRequestSchema, {
    model: { case: "version", value: { name: model.name, version: model.version } },
    data: reference.data,
    flipTest: reference.flipTest,
    useGtBoxes: reference.useGtBoxes,
    maxImages: reference.maxImages,
  });
}

/** An AP for a reason: three decimals, four where three would show two different APs as equal. */
function apText(value: number, other: number): string {
  return value.toFixed(3) === other.toFixed(3) && value !== other ? value.toFixed(4) : value.toFixed(3);
}

/**
 * IF_BETTER's rule: the candidate is promoted when its AP exceeds the serving version's by more than the
 * policy's margin. The reason reads as the CLI shows it: "AP 0.137 is not above serving 0.235 + 0.005".
 */
export function ifBetterVerdict(candidateAp: number, servingAp: number, minApGain: number): { promote: boolean; reason: string } {
  const promote = candidateAp > servingAp + minApGain;
  const margin = `${apText(servingAp, candidateAp)} + ${Number(minApGain.toFixed(4))}`;
  return { promote, reason: `AP ${apText(candidateAp, servingAp)} is ${promote ? "" : "not "}above serving ${margin}` };
}

/** What the policy decided for a candidate before anything was promoted: applied once the version exists. */
export interface PromotionPlan {
  /** Make it serve now. */
  readonly promote: boolean;
  /** Put it on canary or shadow trial (the inferencers decide later). */
  readonly trial: boolean;
  readonly policy: PromotionPolicy | undefined;
  /** The decision, less its candidate's version (unknown until published). */
  readonly decision: MessageInitShape<typeof PromotionDecisionSchema>;
  /** The candidate's AP on the reference set, kept for the version once it is published. */
  readonly candidateAp?: { readonly reference: ReferenceSet; readonly metrics: KeypointMetrics };
}

/** The candidate a policy judges: a job's publication of one checkpoint. */
export interface Candidate {
  readonly modelName: string;
  readonly jobId: string;
  readonly checkpointId: string;
  /** The job's config: its validation set and settings, and the model's contract for an evaluation. */
  readonly config: TrainConfig;
  /** Its served artifact's metrics on its job's validation set (the manifest's). */
  readonly metrics: KeypointMetrics | undefined;
  /** Its served ONNX model, for an evaluation on a reference set of the policy's. */
  readonly model: () => Promise<Uint8Array>;
}

type EvaluateResponseInit = MessageInitShape<typeof EvaluateResponseSchema>;

export interface PromotionGateDependencies {
  readonly registry: Pick<ModelRegistry, "getPolicy" | "getServing" | "history" | "decisions" | "recordDecision" | "setServing" | "startTrial">;
  /** The Evaluate RPC's path (EvaluationRunner): how the serving version is measured. Without it, IF_BETTER refuses. */
  readonly evaluate?: (request: EvaluateRequest, signal: AbortSignal) => Promise<EvaluateResponseInit>;
  /** Measures a model not yet published; default: an evaluation worker (the Evaluate RPC's). */
  readonly evaluateModel?: (init: EvaluationInit, signal: AbortSignal) => Promise<EvaluationOutcome>;
  readonly roots?: DataRoots;
  /** Where APs on reference sets are kept between publications; without it every comparison measures again. */
  readonly apCache?: KeyValueStore;
  readonly logger: Logger;
}

/** How long measuring one version on a reference set may take (a validation pass; minutes for COCO on a CPU). */
const EVALUATION_TIMEOUT_MS = 30 * 60_000;

/**
 * A publication's promotion by the model's policy (ALWAYS, IF_BETTER, CANARY, SHADOW): `plan` decides before
 * the registry write, `record` applies the plan to the published version and keeps the decision, and `settle`
 * is what a retry of the same publication does, so that a takeover after a crash never decides twice.
 */
export class PromotionGate {
  readonly #deps: PromotionGateDependencies;
  readonly #cache: ReferenceApCache | undefined;

  constructor(deps: PromotionGateDependencies) {
    this.#deps = deps;
    this.#cache = deps.apCache === undefined ? undefined : new ReferenceApCache(deps.apCache);
  }

  /**
   * What the policy decides for `candidate` against the version serving now (or `baseline`: the one that
   * served before the candidate, when an earlier attempt already promoted it).
   */
  async plan(candidate: Candidate, baseline?: ModelRef): Promise<PromotionPlan> {
    const { registry } = this.#deps;
    const policy = await registry.getPolicy(candidate.modelName);
    const mode = policyMode(policy);
    const serving = baseline ?? (await registry.getServing(candidate.modelName))?.record.model;
    const base = { mode, decidedBy: candidate.jobId, ...(serving === undefined ? {} : { serving }) };
    if (serving === undefined || serving.version === "") {
      return { promote: true, trial: false, policy, decision: { ...base, verdict: PromotionVerdict.PROMOTED, reason: "first version: nothing served yet" } };
    }
    if (mode === PromotionMode.CANARY || mode === PromotionMode.SHADOW) {
      return { promote: false, trial: true, policy, decision: { ...base, verdict: PromotionVerdict.TRIAL_STARTED } };
    }
    if (mode !== PromotionMode.IF_BETTER) {
      const reason = policy === undefined ? "no promotion policy set: every publication is promoted" : "policy always: every publication is promoted";
      return { promote: true, trial: false, policy, decision: { ...base, verdict: PromotionVerdict.PROMOTED, reason } };
    }
    const reference = referenceSetOf(policy, candidate.config);
    const withReference = { ...base, referenceSet: reference.name };
    let candidateMetrics: KeypointMetrics;
    let servingMetrics: KeypointMetrics;
    try {
      candidateMetrics = await this.#candidateAp(candidate, reference);
      servingMetrics = await this.#versionAp(serving, reference);
    } catch (error) {
      // Not the candidate's fault, nor a reason to fail the job: it stays published, and an admin may promote it.
      const failure = AppError.from(error);
      this.#deps.logger.warn("an if-better comparison could not be measured; the candidate is not promoted", { model: candidate.modelName, job_id: candidate.jobId, err: error });
      return {
        promote: false,
        trial: false,
        policy,
        decision: { ...withReference, verdict: PromotionVerdict.REJECTED, reason: `the comparison could not be measured (${failure.message}); not promoted: poseloop promote does it by hand` },
      };
    }
    const verdict = ifBetterVerdict(candidateMetrics.ap, servingMetrics.ap, policy?.minApGain ?? 0);
    return {
      promote: verdict.promote,
      trial: false,
      policy,
      decision: {
        ...withReference,
        verdict: verdict.promote ? PromotionVerdict.PROMOTED : PromotionVerdict.REJECTED,
        candidateAp: candidateMetrics.ap,
        servingAp: servingMetrics.ap,
        reason: verdict.reason,
      },
      candidateAp: { reference, metrics: candidateMetrics },
    };
  }

  /**
   * A promotion by hand over the policy (PublishCheckpoint, `poseloop promote`, a rollback): an admin's
   * override, decided now and kept in the log like the policy's own decisions.
   */
  async overridePlan(modelName: string, decidedBy: string, reason: string): Promise<PromotionPlan> {
    const { registry } = this.#deps;
    const policy = await registry.getPolicy(modelName);
    const serving = (await registry.getServing(modelName))?.record.model;
    return {
      promote: true,
      trial: false,
      policy,
      decision: { mode: policyMode(policy), verdict: PromotionVerdict.PROMOTED, decidedBy, reason, ...(serving === undefined ? {} : { serving }) },
    };
  }

  /**
   * Keeps the decision of a plan for the version now published (`promoted`: the registry write made it serve),
   * and starts its trial under CANARY or SHADOW. The candidate's AP on the reference set is kept for the
   * version, so the publication after it, should this one serve, does not measure it again.
   */
  async record(plan: PromotionPlan, candidate: ModelRef, promoted: boolean): Promise<PromotionDecision> {
    const { registry } = this.#deps;
    const name = candidate.name;
    if (plan.candidateAp !== undefined) await this.#cache?.put(candidate, plan.candidateAp.reference, plan.candidateAp.metrics).catch((error: unknown) => this.#cacheFailed(error));
    // A version that serves already (an earlier attempt promoted it) is not put on trial.
    if (plan.trial && !promoted && plan.policy !== undefined) {
      await registry.startTrial(name, candidate, plan.policy, { setBy: String(plan.decision.decidedBy ?? "") });
      // startTrial kept the decision; this is it (the newest of the log).
      const decided = (await registry.decisions(name)).findLast((d) => d.candidate?.version === candidate.version);
      if (decided !== undefined) return decided;
    }
    const planned = plan.decision.verdict ?? PromotionVerdict.UNSPECIFIED;
    // What the registry write did is the verdict: a version that serves was promoted, whatever the plan said.
    const verdict = promoted ? PromotionVerdict.PROMOTED : planned === PromotionVerdict.PROMOTED ? PromotionVerdict.REJECTED : planned;
    return registry.recordDecision(name, { ...plan.decision, verdict, candidate: create(ModelRefSchema, candidate) });
  }

  /**
   * A retry of the publication of `published` (its owner died after the registry write): its decision when one
   * was kept, else the decision made now and applied (promoted with compare-and-set, or its trial started),
   * never a second one. A version an earlier attempt already made serve is recorded PROMOTED against the
   * version that served before it.
   */
  async settle(published: ModelManifest, candidate: Candidate): Promise<PromotionDecision> {
    const { registry } = this.#deps;
    const ref = create(ModelRefSchema, published.model ?? {});
    const name = candidate.modelName;
    const decided = (await registry.decisions(name)).findLast((d) => d.candidate?.version === ref.version && d.decidedBy === candidate.jobId);
    if (decided !== undefined) return decided;
    const serving = await registry.getServing(name);
    if (serving?.record.model?.version === ref.version) {
      const history = await registry.history(name);
      const at = history.findLastIndex((entry) => entry.record.model?.version === ref.version);
      const before = history.slice(0, Math.max(0, at)).findLast((entry) => entry.record.model?.version !== ref.version)?.record.model;
      const plan = await this.plan(candidate, before ?? create(ModelRefSchema));
      return this.record(plan, ref, true);
    }
    const plan = await this.plan(candidate);
    let promoted = false;
    if (plan.promote) {
      await registry.setServing(name, ref, { expectedRevision: serving?.revision ?? 0, setBy: candidate.jobId, reason: `${candidate.config.name}: ${candidate.checkpointId}` });
      promoted = true;
    }
    return this.record(plan, ref, promoted);
  }

  async #candidateAp(candidate: Candidate, reference: ReferenceSet): Promise<KeypointMetrics> {
    if (!reference.fromPolicy) {
      // The gate measured the served artifact on exactly this set and these settings.
      if (candidate.metrics === undefined) throw new AppError(Code.FAILED_PRECONDITION, "the candidate has no validation AP");
      return candidate.metrics;
    }
    const roots = this.#deps.roots;
    if (roots === undefined) throw new AppError(Code.FAILED_PRECONDITION, "this trainer evaluates on no reference set");
    const config = evaluationConfig(candidate.config, referenceRequest({ name: candidate.modelName, version: "" }, reference));
    const evaluate = this.#deps.evaluateModel ?? ((init, signal) => evaluateInWorker(init, signal, `poseloop-promotion-${candidate.jobId}`));
    const outcome = await evaluate(
      { config: toBinary(TrainConfigSchema, config), roots, model: { onnx: await candidate.model() }, label: `${candidate.modelName} candidate of ${candidate.jobId}` },
      AbortSignal.timeout(EVALUATION_TIMEOUT_MS),
    );
    return fromBinary(KeypointMetricsSchema, outcome.metrics);
  }

  async #versionAp(version: ModelRef, reference: ReferenceSet): Promise<KeypointMetrics> {
    const cached = await this.#cache?.get(version, reference).catch((error: unknown) => this.#cacheFailed(error));
    if (cached !== undefined) return cached;
    const evaluate = this.#deps.evaluate;
    if (evaluate === undefined) throw new AppError(Code.FAILED_PRECONDITION, "this trainer does not evaluate models");
    const response = await evaluate(referenceRequest(version, reference), AbortSignal.timeout(EVALUATION_TIMEOUT_MS));
    const metrics = create(KeypointMetricsSchema, response.metrics ?? {});
    await this.#cache?.put(version, reference, metrics).catch((error: unknown) => this.#cacheFailed(error));
    return metrics;
  }

  #cacheFailed(error: unknown): undefined {
    // The cache saves an evaluation; without it the comparison is only slower.
    this.#deps.logger.warn("the reference AP cache failed; measuring instead", { err: error });
    return undefined;
  }
}

/**
 * APs of published versions on reference sets (KV bucket poseloop-reference-aps): a version's AP on a set does
 * not change, and measuring it is a validation pass, so each publication of an if-better model measures the
 * serving version only the first time it is compared on that set.
 */
export class ReferenceApCache {
  readonly #kv: KeyValueStore;

  constructor(kv: KeyValueStore) {
    this.#kv = kv;
  }

  /** `<model>.<version>.<digest of the set and its settings>`. */
  static key(version: Pick<ModelRef, "name" | "version">, reference: ReferenceSet): string {
    const digest = createHash("sha256")
      .update(toBinary(DataSpecSchema, reference.data))
      .update(JSON.stringify([reference.flipTest, reference.useGtBoxes, reference.maxImages]))
      .digest("hex")
      .slice(0, 24);
    return `${version.name}.${version.version}.${digest}`;
  }

  async get(version: Pick<ModelRef, "name" | "version">, reference: ReferenceSet): Promise<KeypointMetrics | undefined> {
    const entry = await this.#kv.get(ReferenceApCache.key(version, reference));
    return entry === undefined ? undefined : fromBinary(KeypointMetricsSchema, entry.value);
  }

  async put(version: Pick<ModelRef, "name" | "version">, reference: ReferenceSet, metrics: KeypointMetrics): Promise<void> {
    await this.#kv.put(ReferenceApCache.key(version, reference), toBinary(KeypointMetricsSchema, metrics));
  }
}
