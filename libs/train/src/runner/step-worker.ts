// The StepRunner's worker thread: owns the StepEngine (its onnxruntime sessions block for a whole step).
import { serveWorkerRpc, Transfer } from "@poseloop/core";
import { encodeModel } from "@poseloop/onnx";
import type { InferenceModelOptions } from "../compile/forward-graph.js";
import { StepEngine, type StepBatch, type StepRunnerOptions } from "./step-engine.js";
import { decodeTrainingState, encodeTrainingState } from "./training-state.js";

let engine: StepEngine | undefined;

function current(): StepEngine {
  if (engine === undefined) throw new Error("the step engine is not created");
  return engine;
}

serveWorkerRpc({
  create: async (options: StepRunnerOptions) => {
    engine = await StepEngine.create(options);
    return { params: engine.model.registry.params.map((p) => ({ name: p.name, shape: p.shape })), heatmapWidth: engine.model.heatmapWidth, heatmapHeight: engine.model.heatmapHeight };
  },
  run: ({ batch, lr }: { batch: StepBatch; lr: number }) => current().run(batch, lr),
  exportState: () => {
    const bytes = encodeTrainingState(current().exportState());
    return new Transfer(bytes, [bytes.buffer as ArrayBuffer]);
  },
  importState: (bytes: Uint8Array) => {
    current().importState(decodeTrainingState(bytes));
  },
  loadWeights: ({ weights, skip }: { weights: Map<string, Float32Array>; skip?: string[] }) => {
    current().loadWeights(weights, skip === undefined ? {} : { skip });
  },
  weights: () => current().weights(),
  averagedWeights: () => current().averagedWeights(),
  inferenceModel: (options: InferenceModelOptions) => {
    const bytes = encodeModel(current().inferenceModel(options));
    return new Transfer(bytes, [bytes.buffer as ArrayBuffer]);
  },
  predict: async ({ images, n }: { images: Float32Array; n: number }) => {
    const heatmaps = await current().predict(images, n);
    return new Transfer(heatmaps, [heatmaps.buffer as ArrayBuffer]);
  },
  predictOutputs: async ({ images, n }: { images: Float32Array; n: number }) => {
    const outputs = await current().predictOutputs(images, n);
    return new Transfer(outputs, Object.values(outputs).map((data) => data.buffer as ArrayBuffer));
  },
  release: async () => {
    await engine?.release();
    engine = undefined;
  },
});
