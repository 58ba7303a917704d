import { startModuleWorker, WorkerClient } from "@poseloop/core";
import type { ExportInit } from "./checkpoint-export.js";
import type { ExportOutcome } from "./model-export.js";

/**
 * Exports a checkpoint's weights in a worker thread of its own (onnxruntime never runs on the service's event
 * loop), which ends with the call.
 */
export async function exportInWorker(init: ExportInit, name = "poseloop-export"): Promise<ExportOutcome> {
  const client = new WorkerClient(startModuleWorker(import.meta.url, "./export-worker", { name }));
  try {
    return await client.call<ExportOutcome>("export", init);
  } finally {
    await client.terminate();
  }
}
