import { SeededRandom } from "@poseloop/core";
import { IoNames, type EmaConfig, type ModelConfig, type StepBatch, type TrainingGraphConfig } from "@poseloop/train";
import { afterEach, describe, expect, it } from "vitest";
import { TorchTrainingEngine } from "./torch-engine.js";
import { OrtTrainingEngine, type TrainingEngine } from "./training-engine.js";
import { worstWeightError } from "../testing/weight-error.js";

// Debian's interpreter, where CI installs python3-torch: a missing torch fails these tests, it never skips them.
const PYTHON = "/usr/bin/python3";
const W = 48;
const H = 64;
const K = 5;
const B = 2;
const model: ModelConfig = { architecture: "lite", inputWidth: W, inputHeight: H, numKeypoints: K, lite: { channels: [8, 16, 16] } };
const training: TrainingGraphConfig = { batchSize: B, gradAccumSteps: 2, clipGradNorm: 0.015, optimizer: { kind: "sgd", momentum: 0.9, nesterov: true, weightDecay: 1e-4 } };
const ema: EmaConfig = { decay: 0.9, warmupUpdates: 2 };
const SEED = 11;

const engines: TrainingEngine[] = [];
afterEach(async () => {
  await Promise.all(engines.splice(0).map((engine) => engine.release()));
});

async function torchEngine(): Promise<TrainingEngine> {
  const engine = await TorchTrainingEngine.create({ model, training, ema, seed: SEED, python: PYTHON, threads: 1, deterministic: true, env: { PATH: process.env.PATH }, progressTimeoutMs: 60_000 });
  engines.push(engine);
  return engine;
}

function batches(count: number): StepBatch[] {
  const random = SeededRandom.fromSeed32(5);
  return Array.from({ length: count }, () => ({
    images: Float32Array.from({ length: B * 3 * H * W }, () => random.normalPaired()),
    targets: Float32Array.from({ length: B * K * (H / 4) * (W / 4) }, () => random.next()),
    targetWeights: Float32Array.from({ length: B * K }, () => (random.next() < 0.8 ? 1 : 0)),
  }));
}

describe("TRAIN.EMA in the PyTorch engine, through the trainer's side of the protocol", () => {
  it("averages as the onnxruntime engine does, keeps the average in its state (resumed bit for bit) and restarts it at loaded weights", async () => {
    const data = batches(8);
    const ort = await OrtTrainingEngine.create({ model, training, ema, seed: SEED, intraOpThreads: 1 });
    engines.push(ort);
    const torch = await torchEngine();
    expect(await torch.averagedWeights()).toEqual(await torch.weights());
    for (const batch of data.slice(0, 3)) {
      await ort.run(batch, 0.01);
      await torch.run(batch, 0.01);
    }
    const saved = await torch.exportState();
    expect(saved.tensors.has(IoNames.emaParam("final_layer.weight"))).toBe(true);
    for (const batch of data.slice(3)) {
      await ort.run(batch, 0.01);
      await torch.run(batch, 0.01);
    }
    const expected = (await ort.averagedWeights()) as NonNullable<Awaited<ReturnType<TrainingEngine["averagedWeights"]>>>;
    const actual = (await torch.averagedWeights()) as typeof expected;
    // The engines' parity bound for SGD weights (torch-engine.int.test.ts); the average differs from the weights by far more.
    expect(worstWeightError(actual.params, expected.params).error).toBeLessThan(1e-5);
    expect(worstWeightError(actual.buffers, expected.buffers).error).toBeLessThan(1e-5);
    expect(worstWeightError((await torch.weights()).params, expected.params).error).toBeGreaterThan(1e-3);

    const resumed = await torchEngine();
    await resumed.importState(saved);
    for (const batch of data.slice(3)) await resumed.run(batch, 0.01);
    const a = await torch.exportState();
    const b = await resumed.exportState();
    expect([...b.tensors.keys()]).toEqual([...a.tensors.keys()]);
    for (const [name, value] of a.tensors) expect(Buffer.compare(Buffer.from(value.buffer), Buffer.from((b.tensors.get(name) as Float32Array).buffer)), name).toBe(0);

    await resumed.loadWeights(new Map([["final_layer.bias", new Float32Array(K).fill(0.25)]]));
    const loaded = await resumed.weights();
    expect(loaded.params.get("final_layer.bias")).toEqual(new Float32Array(K).fill(0.25));
    expect(await resumed.averagedWeights()).toEqual(loaded);
  });
});
