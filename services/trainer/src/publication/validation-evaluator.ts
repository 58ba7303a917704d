import type { TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import type { DataRoots } from "../datasets/data-root.js";
import { prepareDetectionData, prepareValidation } from "../datasets/prepare-data.js";
import type { RunContract } from "../experiment/model-contract.js";
import { DetectorEvaluator } from "./detector-evaluator.js";
import { ModelEvaluator } from "./model-evaluator.js";

/**
 * What measures a config's models on its validation set without training them (a checkpoint's export, an
 * evaluation): keypoint AP for a pose model, box AP for a detector. Only the validation split is read.
 */
export async function validationEvaluator(config: TrainConfig, contract: RunContract, roots: DataRoots): Promise<ModelEvaluator | DetectorEvaluator> {
  if (contract.kind === "detector") return new DetectorEvaluator(config, contract, (await prepareDetectionData(config, roots, false)).validation);
  return new ModelEvaluator(config, contract, await prepareValidation(config, roots, contract.schema));
}
