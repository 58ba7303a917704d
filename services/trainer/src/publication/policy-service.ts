import { clone, create, type MessageInitShape } from "@bufbuild/protobuf";
import { defaultPolicy, modelNameProblems, policyMode, promotionPolicyProblems, withTrialDefaults, type ModelRegistry } from "@poseloop/bus";
import { AppError, type Logger } from "@poseloop/core";
import type { ModelRef } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { PromotionPolicySchema, PromotionVerdict } from "@poseloop/proto/poseloop/registry/v1/registry_pb";
import { TrainConfigSchema } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import {
  EvaluateRequestSchema,
  type GetPromotionPolicyRequest,
  type GetPromotionPolicyResponseSchema,
  type ListPromotionDecisionsRequest,
  type ListPromotionDecisionsResponseSchema,
  type SetPromotionPolicyRequest,
  type SetPromotionPolicyResponseSchema,
} from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { datasetProblems } from "../datasets/data-root.js";
import { evaluateRequestProblems } from "../evaluation/evaluation-request.js";
import type { ExperimentChecker } from "../experiment/experiment-checker.js";

export interface PromotionPolicyServiceDependencies {
  readonly registry: Pick<ModelRegistry, "getPolicy" | "setPolicy" | "getCandidate" | "getServing" | "decisions" | "recordDecision">;
  /** Converts a reference experiment file off the event loop, as StartTraining's files are. */
  readonly experiments: Pick<ExperimentChecker, "prepare">;
  readonly dataRoot: string;
  readonly logger: Logger;
}

/** The model name of a request, or every problem with it. */
function modelNameOf(raw: string): { name: string; problems: string[] } {
  const name = raw.trim();
  if (name === "") return { name, problems: ["model_name is required"] };
  return { name, problems: modelNameProblems(name).map((problem) => `model_name: ${problem}`) };
}

/**
 * GetPromotionPolicy, SetPromotionPolicy and ListPromotionDecisions over the registry's policies and decision
 * log, and the decisions of promotions by hand (PublishCheckpoint), which the log keeps with the policy's own.
 */
export class PromotionPolicyService {
  readonly #deps: PromotionPolicyServiceDependencies;

  constructor(deps: PromotionPolicyServiceDependencies) {
    this.#deps = deps;
  }

  async get(request: GetPromotionPolicyRequest): Promise<MessageInitShape<typeof GetPromotionPolicyResponseSchema>> {
    const { name, problems } = modelNameOf(request.modelName);
    if (problems.length > 0) throw AppError.invalid("promotion policy request", problems);
    const [policy, trial] = await Promise.all([this.#deps.registry.getPolicy(name), this.#deps.registry.getCandidate(name)]);
    // A concluded trial leaves an empty record behind: no version, no trial.
    const underWay = trial?.record.model !== undefined && trial.record.model.version !== "" ? { trial: trial.record } : {};
    return { policy: policy ?? defaultPolicy(), isDefault: policy === undefined, ...underWay };
  }

  /**
   * Validates the whole request, the reference set's files under the data root included, and reports every
   * problem in one INVALID_ARGUMENT before anything is stored.
   */
  async set(request: SetPromotionPolicyRequest, setBy: string): Promise<MessageInitShape<typeof SetPromotionPolicyResponseSchema>> {
    const { name, problems } = modelNameOf(request.modelName);
    const policy = clone(PromotionPolicySchema, request.policy ?? create(PromotionPolicySchema));
    if (request.referenceExperimentYaml.trim() !== "") {
      if (policy.referenceSet !== undefined) {
        problems.push("reference_set and reference_experiment_yaml both name a reference set: give one");
      } else {
        const prepared = await this.#deps.experiments.prepare(request.referenceExperimentYaml, { dataRoot: this.#deps.dataRoot });
        if (prepared.config?.data !== undefined && prepared.problems.length === 0) policy.referenceSet = prepared.config.data;
        else problems.push(...prepared.problems.map((problem) => `reference_experiment_yaml: ${problem}`));
      }
    }
    if (policy.referenceSet !== undefined) problems.push(...(await this.#referenceSetProblems(policy)));
    problems.push(...promotionPolicyProblems(withTrialDefaults(policy)));
    if (problems.length > 0) throw AppError.invalid("promotion policy", problems);
    const stored = await this.#deps.registry.setPolicy(name, policy, { setBy });
    return { policy: stored };
  }

  async decisions(request: ListPromotionDecisionsRequest): Promise<MessageInitShape<typeof ListPromotionDecisionsResponseSchema>> {
    const { name, problems } = modelNameOf(request.modelName);
    if (problems.length > 0) throw AppError.invalid("promotion decisions request", problems);
    return { decisions: (await this.#deps.registry.decisions(name)).reverse() };
  }

  /** Keeps a promotion by hand (a rollback, a version made to serve) in the model's decision log. */
  async recordOverride(modelName: string, change: { candidate: ModelRef | undefined; serving: ModelRef | undefined; decidedBy: string; reason: string }): Promise<void> {
    const { registry, logger } = this.#deps;
    try {
      const policy = await registry.getPolicy(modelName);
      await registry.recordDecision(modelName, {
        mode: policyMode(policy),
        verdict: PromotionVerdict.PROMOTED,
        decidedBy: change.decidedBy,
        reason: change.reason,
        ...(change.candidate === undefined ? {} : { candidate: change.candidate }),
        ...(change.serving === undefined ? {} : { serving: change.serving }),
      });
    } catch (error) {
      // The serving version changed as asked; a log entry lost to a bus failure is not a reason to say it did not.
      logger.warn("keeping a promotion by hand in the decision log failed", { model: modelName, err: error });
    }
  }

  /** The reference set's shape (as Evaluate's data checks it) and, for COCO, its files under the data root. */
  async #referenceSetProblems(policy: MessageInitShape<typeof PromotionPolicySchema>): Promise<string[]> {
    const data = policy.referenceSet;
    const shape = evaluateRequestProblems(create(EvaluateRequestSchema, { model: { case: "version", value: { name: "reference" } }, data }))
      .filter((problem) => problem.startsWith("data."))
      .map((problem) => problem.replace(/^data\./, "reference_set."));
    if (shape.length > 0) return shape;
    return (await datasetProblems(create(TrainConfigSchema, { data }), this.#deps.dataRoot)).map((problem) => `reference_set: ${problem}`);
  }
}
