import { afterEach, describe, expect, it } from "vitest";
import { SeededRandom } from "@poseloop/core";
import { detectionStepBatch, type ModelConfig, type OptimizerConfig, type StepBatch, type TrainingGraphConfig } from "@poseloop/train";
import { TorchTrainingEngine, type TorchEngineOptions } from "./torch-engine.js";
import { OrtTrainingEngine, type TrainingEngine } from "./training-engine.js";
import { worstWeightError } from "../testing/weight-error.js";

// Debian's interpreter, where CI installs python3-torch: a missing torch fails these tests, it never skips them.
const PYTHON = "/usr/bin/python3";
const W = 48;
const H = 64;
const K = 5;
const B = 2;
const model: ModelConfig = { architecture: "lite", inputWidth: W, inputHeight: H, numKeypoints: K, lite: { channels: [8, 16, 16] } };
const SEED = 11;

/**
 * Parity tolerances. Both engines compute in float32 with different kernels (onnxruntime's blocked
 * convolutions and reductions, torch's mkldnn/native ones), so every op rounds differently in its last bits
 * (float32's ~6e-8), and over 20 updates each step's rounding feeds the next. Measured on this model and
 * these batches (torch 1.13, onnxruntime-node 1.30, x86-64): losses and gradient norms within 3e-7 relative;
 * weights within 1.1e-6 of each tensor's scale after SGD and 3.5e-5 after AdamW, whose m/√v amplifies the
 * rounding of the tiny gradients of parameters that barely move (the worst tensor is the deconvolution's).
 * The bounds leave a margin of ~6x or more over those, while a real divergence (a wrong decay, a missing
 * clip, an accumulation off by one) is at 1e-3 and above.
 */
const LOSS_RTOL = 2e-6;
const SGD_WEIGHT_RTOL = 1e-5;
const ADAMW_WEIGHT_RTOL = 2e-4;

const engines: TrainingEngine[] = [];
afterEach(async () => {
  await Promise.all(engines.splice(0).map((engine) => engine.release()));
});

function torchOptions(training: TrainingGraphConfig, extra: Partial<TorchEngineOptions> = {}): TorchEngineOptions {
  return { model, training, seed: SEED, python: PYTHON, threads: 1, deterministic: true, env: { PATH: process.env.PATH }, progressTimeoutMs: 60_000, ...extra };
}

async function both(training: TrainingGraphConfig): Promise<{ ort: TrainingEngine; torch: TrainingEngine }> {
  const [ort, torch] = await Promise.all([OrtTrainingEngine.create({ model, training, seed: SEED, intraOpThreads: 1 }), TorchTrainingEngine.create(torchOptions(training))]);
  engines.push(ort, torch);
  return { ort, torch };
}

/** Deterministic micro-batches: noise images, heatmaps with one hot spot per keypoint, some invisible keypoints. */
function batches(count: number, seed: number): StepBatch[] {
  const random = SeededRandom.fromSeed32(seed);
  const hw = W / 4;
  const hh = H / 4;
  return Array.from({ length: count }, () => {
    const images = Float32Array.from({ length: B * 3 * H * W }, () => random.normalPaired());
    const targets = new Float32Array(B * K * hh * hw);
    const targetWeights = new Float32Array(B * K);
    for (let i = 0; i < B * K; i++) {
      targetWeights[i] = random.next() < 0.8 ? 1 : 0;
      const cx = Math.floor(random.next() * hw);
      const cy = Math.floor(random.next() * hh);
      for (let y = 0; y < hh; y++) for (let x = 0; x < hw; x++) targets[i * hh * hw + y * hw + x] = Math.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 2);
    }
    return { images, targets, targetWeights };
  });
}

/** The batches with a teacher's heatmaps: a smoothed copy of the targets plus noise, as a trained teacher's look. */
function withTeacher(plain: StepBatch[], seed: number): StepBatch[] {
  const random = SeededRandom.fromSeed32(seed);
  return plain.map((batch) => ({ ...batch, teacher: Float32Array.from(batch.targets, (t) => 0.8 * t + 0.05 * random.next()) }));
}

async function parity(training: TrainingGraphConfig, microBatches: number, lr: (i: number) => number, weightRtol: number, lossRtol = LOSS_RTOL): Promise<void> {
  const { ort, torch } = await both(training);
  let worstLoss = 0;
  const norms: number[] = [];
  const data = training.distillation === undefined ? batches(microBatches, 5) : withTeacher(batches(microBatches, 5), 6);
  for (const [i, batch] of data.entries()) {
    const expected = await ort.run(batch, lr(i));
    const actual = await torch.run(batch, lr(i));
    expect(actual.updated).toBe(expected.updated);
    expect(actual.step).toBe(expected.step);
    worstLoss = Math.max(worstLoss, Math.abs(actual.loss - expected.loss) / Math.abs(expected.loss));
    if (expected.updated) {
      expect(Math.abs((actual.gradNorm as number) - (expected.gradNorm as number)) / (expected.gradNorm as number)).toBeLessThan(lossRtol);
      norms.push(expected.gradNorm as number);
    }
  }
  const expected = await ort.weights();
  const actual = await torch.weights();
  const params = worstWeightError(actual.params, expected.params);
  const buffers = worstWeightError(actual.buffers, expected.buffers);
  // Printed so the tolerances above can be re-measured when a kernel or a torch version changes.
  console.info(`parity ${training.optimizer.kind}: gradient norms ${Math.min(...norms).toFixed(3)}..${Math.max(...norms).toFixed(3)}, loss ${worstLoss.toExponential(2)}, params ${params.error.toExponential(2)} (${params.name}), buffers ${buffers.error.toExponential(2)} (${buffers.name})`);
  expect(worstLoss).toBeLessThan(lossRtol);
  expect(params.error).toBeLessThan(weightRtol);
  expect(buffers.error).toBeLessThan(weightRtol);
  if (training.clipGradNorm !== undefined) {
    // Some updates clipped and some not, so both sides of clip_grad_norm_ are compared.
    expect(Math.max(...norms)).toBeGreaterThan(training.clipGradNorm);
    expect(Math.min(...norms)).toBeLessThan(training.clipGradNorm);
  }
}

const sgd: OptimizerConfig = { kind: "sgd", momentum: 0.9, nesterov: true, weightDecay: 1e-4 };
const adamw: OptimizerConfig = { kind: "adamw", weightDecay: 0.01 };

describe("the PyTorch engine against the onnxruntime engine", () => {
  it("trains 20 SGD updates (Nesterov momentum, weight decay, accumulation over 2, clipping) to the same losses and weights", async () => {
    await parity({ batchSize: B, gradAccumSteps: 2, clipGradNorm: 0.015, optimizer: sgd }, 40, (i) => 0.01 * (1 - i / 80), SGD_WEIGHT_RTOL);
  });

  it("trains 20 AdamW updates to the same losses and weights", async () => {
    await parity({ batchSize: B, optimizer: adamw }, 20, () => 1e-3, ADAMW_WEIGHT_RTOL);
  });

  it.each([["mse", 1], ["kl", 2]] as const)("distils from a teacher's heatmaps (%s, temperature %i) to the same losses and weights", async (kind, temperature) => {
    // KL is a sum of p·(log p − log q) over each heatmap's pixels whose terms nearly cancel, after a log-softmax
    // each engine evaluates its own way: the loss agrees to ~2.3e-5 relative and the gradient norms to ~2e-6
    // (measured), looser than the plain loss. The weights after the updates agree as closely as without a
    // teacher (~3e-6), which a wrong temperature, reduction or direction of the KL would not.
    await parity({ batchSize: B, optimizer: sgd, distillation: { weight: 0.5, kind, temperature } }, 10, () => 0.01, SGD_WEIGHT_RTOL, kind === "kl" ? 1e-4 : LOSS_RTOL);
  });

  it("continues bit for bit from an exported state in a fresh engine", async () => {
    const training: TrainingGraphConfig = { batchSize: B, gradAccumSteps: 2, clipGradNorm: 0.015, optimizer: sgd };
    const data = batches(10, 9);
    const first = await TorchTrainingEngine.create(torchOptions(training));
    engines.push(first);
    // Five micro-batches: the state is saved halfway through an accumulation.
    for (const batch of data.slice(0, 5)) await first.run(batch, 0.01);
    const state = await first.exportState();
    expect(state.microStep).toBe(1);
    const second = await TorchTrainingEngine.create(torchOptions(training, { seed: SEED + 1 }));
    engines.push(second);
    await second.importState(state);
    expect(second.step).toBe(first.step);
    for (const batch of data.slice(5)) {
      const uninterrupted = await first.run(batch, 0.01);
      const resumed = await second.run(batch, 0.01);
      expect(resumed).toEqual(uninterrupted);
    }
    expect(await second.exportState()).toEqual(await first.exportState());
  });

  it("trains the person detector (CenterNet's losses, its own batch inputs) to the same losses and weights", async () => {
    const detector: ModelConfig = { architecture: "detector-lite", inputWidth: 32, inputHeight: 32, numKeypoints: 0, detector: { channels: [4, 8, 8, 8] } };
    const training: TrainingGraphConfig = { batchSize: B, optimizer: adamw };
    const [ort, torch] = await Promise.all([OrtTrainingEngine.create({ model: detector, training, seed: SEED, intraOpThreads: 1 }), TorchTrainingEngine.create({ ...torchOptions(training), model: detector })]);
    engines.push(ort, torch);
    const random = SeededRandom.fromSeed32(8);
    const grid = 8;
    for (let step = 0; step < 6; step++) {
      const center = new Float32Array(B * grid * grid);
      const size = new Float32Array(B * 2 * grid * grid);
      const offset = new Float32Array(B * 2 * grid * grid);
      const mask = new Float32Array(B * grid * grid);
      for (let b = 0; b < B; b++) {
        const [ix, iy] = [Math.floor(random.next() * grid), Math.floor(random.next() * grid)];
        for (let y = 0; y < grid; y++) for (let x = 0; x < grid; x++) center[(b * grid + y) * grid + x] = Math.exp(-((x - ix) ** 2 + (y - iy) ** 2) / 2);
        const cell = iy * grid + ix;
        [size[b * 2 * grid * grid + cell], size[(b * 2 + 1) * grid * grid + cell]] = [1 + 3 * random.next(), 1 + 3 * random.next()];
        [offset[b * 2 * grid * grid + cell], offset[(b * 2 + 1) * grid * grid + cell]] = [random.next(), random.next()];
        mask[b * grid * grid + cell] = 1;
      }
      const batch = detectionStepBatch(Float32Array.from({ length: B * 3 * 32 * 32 }, () => random.normalPaired()), { centerTarget: center, sizeTarget: size, offsetTarget: offset, regMask: mask });
      const expected = await ort.run(batch, 1e-3);
      const actual = await torch.run(batch, 1e-3);
      expect(Math.abs(actual.loss - expected.loss) / expected.loss).toBeLessThan(LOSS_RTOL);
    }
    expect(worstWeightError((await torch.weights()).params, (await ort.weights()).params).error).toBeLessThan(ADAMW_WEIGHT_RTOL);
  });

  it("takes a bf16 mixed-precision step on the CPU", async () => {
    const torch = await TorchTrainingEngine.create(torchOptions({ batchSize: B, optimizer: adamw }, { amp: true }));
    engines.push(torch);
    expect(torch.info.amp).toBe("bf16");
    const result = await torch.run(batches(1, 3)[0] as StepBatch, 1e-3);
    expect(result.updated).toBe(true);
    expect(Number.isFinite(result.loss) && result.loss > 0).toBe(true);
    expect(torch.step).toBe(1);
  });

  it("runs 2 gloo processes under torchrun (TRAIN.GPUS: 2 on the CPU) equal to one process with 2 replicas", async () => {
    // Each process is a replica taking its block of the batch; DDP averages their gradients, as the single
    // process does replica after replica. The same rounding bound as the engines' parity: the all-reduce sums
    // in another order than the single process.
    const training: TrainingGraphConfig = { batchSize: 1, gradAccumSteps: 2, clipGradNorm: 0.015, optimizer: sgd };
    const [ddp, single] = await Promise.all([
      TorchTrainingEngine.create(torchOptions(training, { gpus: 2, replicas: 2 })),
      TorchTrainingEngine.create(torchOptions(training, { replicas: 2 })),
    ]);
    engines.push(ddp, single);
    expect(ddp.info.worldSize).toBe(2);
    expect(ddp.description).toMatch(/^pytorch \S+ on cpu, 2 processes \(DDP\)$/);
    for (const batch of batches(8, 21)) {
      const a = await ddp.run(batch, 0.01);
      const b = await single.run(batch, 0.01);
      expect(a.updated).toBe(b.updated);
      expect(Math.abs(a.loss - b.loss) / b.loss).toBeLessThan(LOSS_RTOL);
    }
    const a = await ddp.weights();
    const b = await single.weights();
    expect(worstWeightError(a.params, b.params).error).toBeLessThan(SGD_WEIGHT_RTOL);
    expect(worstWeightError(a.buffers, b.buffers).error).toBeLessThan(SGD_WEIGHT_RTOL);
  });
});
