import { raceAbort, startModuleWorker, WorkerClient } from "@poseloop/core";
import type { EvaluationInit, EvaluationOutcome } from "./model-evaluation.js";

/**
 * Evaluates a model in a worker thread of its own (onnxruntime never runs on the service's event loop), which
 * ends with the call, or as soon as `signal` aborts (the caller went away or its deadline passed).
 */
export async function evaluateInWorker(init: EvaluationInit, signal: AbortSignal, name = "poseloop-evaluate"): Promise<EvaluationOutcome> {
  signal.throwIfAborted();
  const client = new WorkerClient(startModuleWorker(import.meta.url, "./evaluation-worker", { name }));
  try {
    return await raceAbort(client.call<EvaluationOutcome>("evaluate", init), signal);
  } finally {
    await client.terminate();
  }
}
