import { fromBinary } from "@bufbuild/protobuf";
import { TrainConfigSchema } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import type { DataRoots } from "../datasets/data-root.js";
import { runContract } from "../experiment/model-contract.js";
import { exportModel, modelFromState, type ExportOutcome } from "./model-export.js";
import { validationEvaluator } from "./validation-evaluator.js";

/** What an export-only worker starts from: the job's config and the weights of one of its checkpoints. */
export interface ExportInit {
  /** The job's resolved TrainConfig, binary. */
  readonly config: Uint8Array;
  readonly roots: DataRoots;
  /** A training state with the model's param:/buffer: tensors (a checkpoint's state; other tensors are ignored). */
  readonly weights: Uint8Array;
  /** Where the run stood with these weights: epochs completed, optimizer steps taken. */
  readonly epoch: number;
  readonly step: number;
}

/**
 * Export → int8 → AP gate of weights that no training run holds (a kept checkpoint published again): the
 * model is built from the config without a training graph, and only the validation set is read, which the
 * gate measures on; the training set may be gone.
 */
export async function exportCheckpointWeights(init: ExportInit): Promise<ExportOutcome> {
  const config = fromBinary(TrainConfigSchema, init.config);
  const contract = runContract(config);
  // Weights first: a state of another model fails before any picture is read.
  const { model, weights } = modelFromState(contract.modelConfig, init.weights);
  const evaluator = await validationEvaluator(config, contract, init.roots);
  try {
    return await exportModel({ model, weights, epoch: init.epoch, step: init.step }, config, evaluator);
  } finally {
    await evaluator.close();
  }
}
