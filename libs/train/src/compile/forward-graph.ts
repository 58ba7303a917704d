import { foldBatchNorms, GraphBuilder, type Dim, type ModelProto, type Value } from "@poseloop/onnx";
import { ForwardContext } from "../nn/context.js";
import { Tape, type Sym } from "../tape.js";
import type { ModelDefinition } from "../zoo/model-config.js";
import { IoNames } from "./io-names.js";

/** Model weights by parameter and buffer name. */
export interface Weights {
  readonly params: ReadonlyMap<string, Float32Array>;
  readonly buffers: ReadonlyMap<string, Float32Array>;
}

/**
 * The forward pass with parameters and buffers as graph inputs (no gradients): "eval" for validation against
 * the training state, "train" to see batch-statistics outputs.
 */
export function compileForwardGraph(model: ModelDefinition, options: { batch: Dim; mode: "train" | "eval" }): ModelProto {
  const g = new GraphBuilder({ name: `forward_${options.mode}`, producer: "poseloop-train" });
  const t = new Tape(g);
  const shape = [options.batch, 3, model.config.inputHeight, model.config.inputWidth];
  const images = t.sym(g.input(IoNames.images, "float32", shape), shape);
  const params = new Map<string, Sym>();
  for (const spec of model.registry.params) params.set(spec.name, t.sym(g.input(IoNames.param(spec.name), "float32", spec.shape), spec.shape));
  const buffers = new Map<string, Value>();
  for (const spec of model.registry.buffers) buffers.set(spec.name, g.input(IoNames.buffer(spec.name), "float32", spec.shape));
  const ctx = new ForwardContext(t, options.mode, params, buffers);
  if (model.objective !== undefined) {
    for (const [name, output] of model.objective.outputs(ctx, images)) g.output(output.value, name);
    return g.build();
  }
  g.output(model.forward(ctx, images).value, IoNames.heatmaps);
  return g.build();
}

export interface InferenceModelOptions {
  /** Input tensor name. Default "input". */
  readonly inputName?: string;
  /** Output tensor name of a heatmap model. Default "heatmaps". A detector's outputs have their fixed names. */
  readonly outputName?: string;
  /** Fold BatchNorm into the convolutions (default true). */
  readonly foldBatchNorm?: boolean;
  /** String metadata stored in the model (e.g. the manifest as JSON). */
  readonly metadata?: Readonly<Record<string, string>>;
}

/**
 * The deployable inference model: the eval-mode forward pass with the weights as initializers, a dynamic batch
 * dimension, and BatchNorm folded into the convolutions.
 */
export function buildInferenceModel(model: ModelDefinition, weights: Weights, options: InferenceModelOptions = {}): ModelProto {
  const g = new GraphBuilder({ name: `${model.config.architecture}_inference`, producer: "poseloop-train" });
  const t = new Tape(g);
  const shape = ["batch", 3, model.config.inputHeight, model.config.inputWidth];
  const images = t.sym(g.input(options.inputName ?? "input", "float32", shape), shape);
  const params = new Map<string, Sym>();
  for (const spec of model.registry.params) {
    const data = weights.params.get(spec.name);
    if (data === undefined) throw new RangeError(`no weights for parameter ${spec.name}`);
    params.set(spec.name, t.sym(g.initializer(spec.name, { dtype: "float32", dims: spec.shape, data }), spec.shape));
  }
  const buffers = new Map<string, Value>();
  for (const spec of model.registry.buffers) {
    const data = weights.buffers.get(spec.name);
    if (data === undefined) throw new RangeError(`no values for buffer ${spec.name}`);
    buffers.set(spec.name, g.initializer(spec.name, { dtype: "float32", dims: spec.shape, data }));
  }
  const ctx = new ForwardContext(t, "eval", params, buffers);
  if (model.objective !== undefined) {
    for (const [name, output] of model.objective.outputs(ctx, images)) g.output(output.value, name, { renameProducer: true });
  } else {
    g.output(model.forward(ctx, images).value, options.outputName ?? "heatmaps", { renameProducer: true });
  }
  for (const [key, value] of Object.entries(options.metadata ?? {})) g.metadata(key, value);
  const built = g.build();
  return options.foldBatchNorm === false ? built : foldBatchNorms(built).model;
}
