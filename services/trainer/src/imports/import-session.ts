import { raceAbort, startModuleWorker, WorkerClient } from "@poseloop/core";
import type { ImportInit, ImportOutcome } from "./import-check.js";

/**
 * Checks an imported model in a worker thread of its own (onnxruntime never runs on the service's event loop),
 * which ends with the call, or as soon as `signal` aborts (the caller went away or its deadline passed).
 */
export async function checkImportInWorker(init: ImportInit, signal: AbortSignal): Promise<ImportOutcome> {
  signal.throwIfAborted();
  const client = new WorkerClient(startModuleWorker(import.meta.url, "./import-worker", { name: "poseloop-import" }));
  try {
    return await raceAbort(client.call<ImportOutcome>("check", init), signal);
  } finally {
    await client.terminate();
  }
}
