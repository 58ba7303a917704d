import { createHash } from "node:crypto";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { encodeModel } from "@poseloop/onnx";
import { KeypointMetricsSchema } from "@poseloop/proto/poseloop/common/v1/metrics_pb";
import { TrainConfigSchema } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import type { DataRoots } from "../datasets/data-root.js";
import { runContract } from "../experiment/model-contract.js";
import { metricsMessage } from "../publication/model-evaluator.js";
import { inferenceModel, modelFromState } from "../publication/model-export.js";
import { validationEvaluator } from "../publication/validation-evaluator.js";

/** What an evaluation worker starts from: plain data, it crosses into the worker. */
export interface EvaluationInit {
  /** The evaluation's TrainConfig, binary: the model's job config with the dataset and TEST.* to use. */
  readonly config: Uint8Array;
  readonly roots: DataRoots;
  /** A published ONNX model (fp32 or int8), or a checkpoint's training state to build the fp32 model from. */
  readonly model: { readonly onnx: Uint8Array } | { readonly state: Uint8Array };
  /** Names the model in the estimator (and its log). */
  readonly label: string;
}

export interface EvaluationOutcome {
  /** KeypointMetrics, binary. */
  readonly metrics: Uint8Array;
  /** "sha256:<64 hex>" of the ONNX model evaluated. */
  readonly modelDigest: string;
}

/**
 * COCO AP of a model on the config's validation set (a detector's: box AP) through the evaluator a training
 * run validates with and a publication gates with: a checkpoint's weights become the same fp32 inference model (BatchNorm
 * folded) that the run's validation built from them, and a published model is measured as the gate measured
 * it. Runs in the evaluation worker.
 */
export async function evaluateOnValidationSet(init: EvaluationInit): Promise<EvaluationOutcome> {
  const config = fromBinary(TrainConfigSchema, init.config);
  const contract = runContract(config);
  let onnx: Uint8Array;
  if ("onnx" in init.model) onnx = init.model.onnx;
  else {
    // Weights first: a state of another model fails before any picture is read.
    const { model, weights } = modelFromState(contract.modelConfig, init.model.state);
    onnx = encodeModel(inferenceModel(model, weights));
  }
  const evaluator = await validationEvaluator(config, contract, init.roots);
  try {
    const evaluation = await evaluator.evaluate(onnx, init.label);
    return {
      metrics: toBinary(KeypointMetricsSchema, metricsMessage(evaluation)),
      modelDigest: `sha256:${createHash("sha256").update(onnx).digest("hex")}`,
    };
  } finally {
    await evaluator.close();
  }
}
