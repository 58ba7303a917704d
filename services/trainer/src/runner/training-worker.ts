import { AppError, Code, serveWorkerRpc, Transfer } from "@poseloop/core";
import type { ExportOutcome } from "../publication/model-export.js";
import { TrainingRun, type RunInit } from "./training-run.js";

let run: TrainingRun | undefined;

function current(): TrainingRun {
  if (run === undefined) throw new AppError(Code.FAILED_PRECONDITION, "the training worker has no run; call init first");
  return run;
}

/** The training worker: one TrainingRun, driven by TrainingSession on the service's thread. */
serveWorkerRpc({
  init: async (init: RunInit) => {
    if (run !== undefined) throw new AppError(Code.FAILED_PRECONDITION, "the training worker already has a run");
    run = await TrainingRun.create(init);
    return run.position;
  },
  train: (args: { maxSteps: number }) => current().train(args.maxSteps),
  validate: async () => {
    const outcome = await current().validate();
    return new Transfer(outcome, [outcome.metrics.buffer as ArrayBuffer]);
  },
  checkpoint: async () => {
    const checkpoint = await current().checkpoint();
    return new Transfer(checkpoint, [checkpoint.bytes.buffer as ArrayBuffer]);
  },
  export: async (args: { checkpoint?: Uint8Array }) => {
    const outcome: ExportOutcome = await current().export(args.checkpoint);
    const buffers = [outcome.fp32, outcome.int8, outcome.weights].flatMap((b) => (b === undefined ? [] : [b.buffer as ArrayBuffer]));
    return new Transfer(outcome, [...new Set(buffers)]);
  },
  close: async () => {
    await run?.close();
    run = undefined;
  },
});
