import { fileURLToPath } from "node:url";
import { AppError, Code } from "@poseloop/core";
import { describe, expect, it } from "vitest";
import { IoNames } from "../compile/io-names.js";
import { emaDecay } from "../optim/ema.js";
import type { OptimizerConfig } from "../optim/optimizer.js";
import { Rng } from "../rng.js";
import { readTensorArchive, relativeError } from "../testing/tensor-archive.js";
import type { ModelConfig } from "../zoo/model-config.js";
import { StepEngine, type StepBatch, type StepRunnerOptions } from "./step-engine.js";
import { decodeTrainingState, encodeTrainingState } from "./training-state.js";

const fixture = (name: string) => readTensorArchive(fileURLToPath(new URL(`../../fixtures/${name}`, import.meta.url)));

describe("TRAIN.EMA in the onnxruntime engine", () => {
  it("equals PyTorch's AveragedModel (use_buffers, the same decay as avg_fn) after golden-lite's SGD run, BatchNorm statistics included", async () => {
    const golden = fixture("golden-lite.bin");
    const expected = fixture("ema-lite.bin");
    const meta = golden.meta as { model: ModelConfig; batchSize: number; gradAccumSteps: number; updates: number; optimizers: Record<string, { config: OptimizerConfig; lr: number; clipGradNorm: number }> };
    const emaMeta = expected.meta as { decay: number; warmupUpdates: number; float32Error: Record<string, number> };
    const sgd = meta.optimizers["sgd"] as { config: OptimizerConfig; lr: number; clipGradNorm: number };
    const engine = await StepEngine.create({
      model: meta.model,
      training: { batchSize: meta.batchSize, gradAccumSteps: meta.gradAccumSteps, clipGradNorm: sgd.clipGradNorm, optimizer: sgd.config },
      seed: 0,
      ema: { decay: emaMeta.decay, warmupUpdates: emaMeta.warmupUpdates },
    });
    try {
      engine.loadWeights(new Map([...golden.tensors].filter(([key]) => key.startsWith("init/")).map(([key, value]) => [key.slice(5), value.data])));
      const micro = meta.updates * meta.gradAccumSteps;
      const slice = (key: string, i: number): Float32Array => {
        const all = golden.tensors.get(key)?.data as Float32Array;
        return all.subarray((i * all.length) / micro, ((i + 1) * all.length) / micro);
      };
      for (let i = 0; i < micro; i++) {
        await engine.run({ images: slice("input/images", i), targets: slice("input/targets", i), targetWeights: slice("input/target_weights", i) }, sgd.lr);
      }
      const averaged = engine.averagedWeights();
      const raw = engine.weights();
      expect(averaged).toBeDefined();
      let compared = 0;
      for (const [name, value] of [...(averaged?.params ?? []), ...(averaged?.buffers ?? [])]) {
        const key = `ema/${name}`;
        const reference = expected.tensors.get(key)?.data;
        expect(reference, key).toBeDefined();
        expect(relativeError(value, reference as Float32Array), name).toBeLessThanOrEqual(Math.max(1e-4, 8 * (emaMeta.float32Error[key] ?? 0)));
        compared++;
      }
      expect(compared).toBe(expected.tensors.size);
      // The trained weights themselves are outside the bound: the check tells the average from them.
      const weight = "final_layer.weight";
      const key = `ema/${weight}`;
      expect(relativeError(raw.params.get(weight) as Float32Array, expected.tensors.get(key)?.data as Float32Array)).toBeGreaterThan(10 * Math.max(1e-4, 8 * (emaMeta.float32Error[key] ?? 0)));
    } finally {
      await engine.release();
    }
  });

  const options: StepRunnerOptions = {
    model: { architecture: "lite", inputWidth: 48, inputHeight: 64, numKeypoints: 17 },
    training: { batchSize: 2, gradAccumSteps: 2, clipGradNorm: 0.5, optimizer: { kind: "sgd", momentum: 0.9, nesterov: true, weightDecay: 1e-4 } },
    seed: 11,
    ema: { decay: 0.99, warmupUpdates: 3 },
  };
  const batch = (seed: number): StepBatch => {
    const rng = new Rng(seed);
    return {
      images: Float32Array.from({ length: 2 * 3 * 64 * 48 }, () => rng.normal()),
      targets: Float32Array.from({ length: 2 * 17 * 16 * 12 }, () => rng.between(0, 1)),
      targetWeights: Float32Array.from({ length: 2 * 17 }, (_, i) => (i % 5 === 2 ? 0 : 1)),
    };
  };

  it("resumes bit-identically mid-accumulation: weights, optimizer state and the moving average", async () => {
    const batches = [1, 2, 3, 4, 5, 6, 7].map(batch);
    const uninterrupted = await StepEngine.create(options);
    const first = await StepEngine.create(options);
    const resumed = await StepEngine.create({ ...options, seed: 999 });
    try {
      for (const [i, b] of batches.entries()) await uninterrupted.run(b, 0.01 * (1 - i / 10));
      for (const [i, b] of batches.slice(0, 3).entries()) await first.run(b, 0.01 * (1 - i / 10));
      // Through the checkpoint encoding, as a resumed job reads it.
      resumed.importState(decodeTrainingState(encodeTrainingState(first.exportState())));
      for (const [i, b] of batches.slice(3).entries()) await resumed.run(b, 0.01 * (1 - (i + 3) / 10));
      const a = uninterrupted.exportState();
      const b = resumed.exportState();
      const { params, buffers } = uninterrupted.model.registry;
      expect([...a.tensors.keys()].filter((name) => name.startsWith("ema:"))).toHaveLength(params.length + buffers.length);
      for (const spec of buffers) expect(a.tensors.has(IoNames.emaBuffer(spec.name)), spec.name).toBe(true);
      expect(Buffer.compare(Buffer.from(encodeTrainingState(a)), Buffer.from(encodeTrainingState(b)))).toBe(0);
      expect(resumed.averagedWeights()?.params.get("final_layer.weight")).not.toEqual(resumed.weights().params.get("final_layer.weight"));
    } finally {
      await Promise.all([uninterrupted.release(), first.release(), resumed.release()]);
    }
  });

  it("starts at the initial weights, restarts at loaded weights and at a state saved without it, and refuses part of one", async () => {
    const engine = await StepEngine.create(options);
    const plain = await StepEngine.create({ ...options, ema: undefined as never });
    try {
      expect(engine.averagedWeights()?.params).toEqual(engine.weights().params);
      expect(plain.averagedWeights()).toBeUndefined();
      // One update: the average moves (1 - d) of the way from the initial weights to the new ones.
      const before = engine.weights();
      await engine.run(batch(1), 0.01);
      await engine.run(batch(2), 0.01);
      const d = emaDecay(options.ema ?? { decay: 0, warmupUpdates: 0 }, 1);
      const name = "final_layer.weight";
      const w0 = before.params.get(name) as Float32Array;
      const w1 = engine.weights().params.get(name) as Float32Array;
      const expected = Float32Array.from(w0, (v, i) => d * v + (1 - d) * (w1[i] as number));
      expect(engine.averagedWeights()?.params.get(name)).toEqual(expected);

      const loaded = new Map([[name, Float32Array.from(w1, (v) => v * 2)]]);
      engine.loadWeights(loaded);
      expect(engine.averagedWeights()?.params).toEqual(engine.weights().params);

      // A checkpoint of a run without TRAIN.EMA: the average starts at its weights.
      await plain.run(batch(3), 0.01);
      await plain.run(batch(4), 0.01);
      engine.importState(plain.exportState());
      expect(engine.averagedWeights()?.params).toEqual(plain.weights().params);
      expect(engine.step).toBe(1);

      const state = engine.exportState();
      const partial = new Map(state.tensors);
      partial.delete(IoNames.emaParam(name));
      expect(() => engine.importState({ ...state, tensors: partial })).toThrow(expect.objectContaining({ code: Code.INVALID_ARGUMENT }) as AppError);
      // A run without TRAIN.EMA reads a state with one and ignores the average.
      plain.importState(state);
      expect(plain.weights().params).toEqual(engine.weights().params);
    } finally {
      await Promise.all([engine.release(), plain.release()]);
    }
  });

  it("averages data-parallel replicas' updates as it averages the accumulation they equal", async () => {
    const training = { batchSize: 2, optimizer: { kind: "adam" as const } };
    const replicated = await StepEngine.create({ ...options, training, replicas: 2 });
    const accumulated = await StepEngine.create({ ...options, training: { ...training, gradAccumSteps: 2 } });
    try {
      for (let step = 0; step < 3; step++) {
        const [a, b] = [batch(2 * step + 1), batch(2 * step + 2)];
        await accumulated.run(a, 1e-3);
        await accumulated.run(b, 1e-3);
        await replicated.run({ images: Float32Array.from([...a.images, ...b.images]), targets: Float32Array.from([...a.targets, ...b.targets]), targetWeights: Float32Array.from([...a.targetWeights, ...b.targetWeights]) }, 1e-3);
      }
      const [x, y] = [replicated.averagedWeights(), accumulated.averagedWeights()];
      expect(x?.params.size).toBeGreaterThan(0);
      for (const [name, data] of x?.params ?? []) expect(Buffer.from(data.buffer).equals(Buffer.from((y?.params.get(name) as Float32Array).buffer)), name).toBe(true);
      expect(x?.params.get("final_layer.weight")).not.toEqual(replicated.weights().params.get("final_layer.weight"));
    } finally {
      await Promise.all([replicated.release(), accumulated.release()]);
    }
  });

  it("refuses a decay outside (0, 1) and a negative or fractional warm-up, all at once", async () => {
    await expect(StepEngine.create({ ...options, ema: { decay: 1, warmupUpdates: -1.5 } })).rejects.toSatisfy(
      (e) => AppError.is(e, Code.INVALID_ARGUMENT) && /decay must lie in \(0, 1\), got 1/.test(e.message) && /warm-up must be a non-negative integer/.test(e.message),
    );
  });

  it("warms up as Ultralytics' ModelEMA: d = decay x (1 - exp(-updates / warmup)), no warm-up with 0", () => {
    expect(emaDecay({ decay: 0.9999, warmupUpdates: 2000 }, 2000)).toBeCloseTo(0.9999 * (1 - Math.exp(-1)), 12);
    expect(emaDecay({ decay: 0.9999, warmupUpdates: 2000 }, 1)).toBeLessThan(1e-3);
    expect(emaDecay({ decay: 0.9, warmupUpdates: 0 }, 1)).toBe(0.9);
  });
});
