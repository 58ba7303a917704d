import { serveWorkerRpc } from "@poseloop/core";
import { checkImport, type ImportInit } from "./import-check.js";

/** The import worker: one imported model's checks, started by checkImportInWorker. */
serveWorkerRpc({
  check: (init: ImportInit) => checkImport(init),
});
