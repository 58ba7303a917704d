import { serveWorkerRpc, Transfer } from "@poseloop/core";
import { exportCheckpointWeights, type ExportInit } from "./checkpoint-export.js";

/** The export-only worker: one export of a checkpoint's weights, started by exportInWorker. */
serveWorkerRpc({
  export: async (init: ExportInit) => {
    const outcome = await exportCheckpointWeights(init);
    const buffers = [outcome.fp32, outcome.int8, outcome.weights].flatMap((b) => (b === undefined ? [] : [b.buffer as ArrayBuffer]));
    return new Transfer(outcome, [...new Set(buffers)]);
  },
});
