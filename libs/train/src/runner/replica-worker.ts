// A data-parallel helper replica: runs the gradients graph on its shard of each batch, with the weights the
// primary sends, and returns the shard's loss and gradients. Its BatchNorm running statistics are never read
// (the primary's shard keeps them, as DistributedDataParallel keeps rank 0's), so it feeds fixed ones.
import * as ort from "onnxruntime-node";
import { SeededRandom, serveWorkerRpc, Transfer } from "@poseloop/core";
import { encodeModel } from "@poseloop/onnx";
import { IoNames } from "../compile/io-names.js";
import { compileShardGradients, type TrainingGraphConfig } from "../compile/training-graphs.js";
import { initialize } from "../nn/parameters.js";
import { defineModel } from "../zoo/model-config.js";
import type { ShardRequest, ShardResult } from "./replica-protocol.js";
import { batchInputs, StepEngine, type StepRunnerOptions } from "./step-engine.js";

let state: { session: ort.InferenceSession; fixed: Record<string, ort.Tensor>; options: StepRunnerOptions; dims: ReadonlyMap<string, number[]> } | undefined;

serveWorkerRpc({
  // `training` is the primary's graph configuration (graphConfig), so every shard compiles the same graph.
  create: async ({ options, training, replicas }: { options: StepRunnerOptions; training: TrainingGraphConfig; replicas: number }) => {
    const model = defineModel(options.model);
    const graph = compileShardGradients(model, training, replicas);
    const session = await ort.InferenceSession.create(encodeModel(graph), StepEngine.sessionOptions(options));
    const fixed: Record<string, ort.Tensor> = {};
    const random = SeededRandom.fromSeed32(0);
    for (const spec of model.registry.buffers) fixed[IoNames.buffer(spec.name)] = new ort.Tensor("float32", initialize(spec, random), spec.shape);
    for (const spec of model.registry.params) fixed[IoNames.accum(spec.name)] = new ort.Tensor("float32", new Float32Array(spec.shape.reduce((a, b) => a * b, 1)), spec.shape);
    const b = options.training.batchSize;
    state = { session, fixed, options, dims: new Map(batchInputs(model, training).map((input) => [input.name, [b, ...input.shape]])) };
  },
  run: async (request: ShardRequest) => {
    if (state === undefined) throw new Error("the replica is not created");
    const { session, fixed, dims } = state;
    const feeds: Record<string, ort.Tensor> = { ...fixed };
    for (const [name, shape] of dims) feeds[name] = new ort.Tensor("float32", request.inputs[name] as Float32Array, shape);
    if (request.lossScale !== undefined) feeds[IoNames.lossScale] = new ort.Tensor("float32", Float32Array.of(request.lossScale), []);
    for (const [name, data] of request.params) feeds[IoNames.param(name)] = new ort.Tensor("float32", data, (fixed[IoNames.accum(name)] as ort.Tensor).dims);
    const outputs = await session.run(feeds);
    const grads = new Map<string, Float32Array>();
    for (const name of request.params.keys()) grads.set(name, outputs[IoNames.accumOut(name)]?.data as Float32Array);
    const result: ShardResult = { loss: Number((outputs[IoNames.loss]?.data as Float32Array)[0]), grads };
    return new Transfer(result, [...grads.values()].map((g) => g.buffer as ArrayBuffer));
  },
  release: async () => {
    await state?.session.release();
    state = undefined;
  },
});
