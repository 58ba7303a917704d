import { serveWorkerRpc, Transfer } from "@poseloop/core";
import { evaluateOnValidationSet, type EvaluationInit } from "./model-evaluation.js";

/** The evaluation worker: one evaluation, started by evaluateInWorker. */
serveWorkerRpc({
  evaluate: async (init: EvaluationInit) => {
    const outcome = await evaluateOnValidationSet(init);
    return new Transfer(outcome, [outcome.metrics.buffer as ArrayBuffer]);
  },
});
