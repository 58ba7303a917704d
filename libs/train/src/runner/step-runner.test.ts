import * as ort from "onnxruntime-node";
import { AppError, Code } from "@poseloop/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { compileTrainingGraphs } from "../compile/training-graphs.js";
import { defineModel } from "../zoo/model-config.js";
import { Rng } from "../rng.js";
import { decodeTrainingState } from "./training-state.js";
import { StepRunner } from "./step-runner.js";
import { graphConfig, StepEngine, type StepBatch, type StepRunnerOptions } from "./step-engine.js";
import { nchwcBlockSize } from "./nchwc.js";

const B = 4;
const H = 64;
const W = 48;
const K = 17;

/** A fixed batch: noise crops and one Gaussian blob per joint, different per sample. */
function makeBatch(seed: number, heatmapStride = 4): StepBatch {
  const rng = new Rng(seed);
  const images = Float32Array.from({ length: B * 3 * H * W }, () => rng.normal());
  const hh = H / heatmapStride;
  const hw = W / heatmapStride;
  const targets = new Float32Array(B * K * hh * hw);
  for (let b = 0; b < B; b++) {
    for (let k = 0; k < K; k++) {
      const cx = rng.between(2, hw - 2);
      const cy = rng.between(2, hh - 2);
      for (let y = 0; y < hh; y++) for (let x = 0; x < hw; x++) targets[((b * K + k) * hh + y) * hw + x] = Math.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 8);
    }
  }
  const targetWeights = Float32Array.from({ length: B * K }, (_, i) => (i % 7 === 3 ? 0 : 1));
  return { images, targets, targetWeights };
}

const base: StepRunnerOptions = {
  model: { architecture: "lite", inputWidth: W, inputHeight: H, numKeypoints: K },
  training: { batchSize: B, optimizer: { kind: "adam" } },
  seed: 11,
};

/** `steps` steps on one fixed batch at LR 1e-3: the first and the last step's results. */
async function fitFixedBatch(runner: StepRunner, batch: StepBatch, steps: number) {
  const first = await runner.run(batch, 1e-3);
  let last = first;
  for (let i = 1; i < steps; i++) last = await runner.run(batch, 1e-3);
  return { first, last };
}

/** The exported inference model (BN folded), run by a plain InferenceSession, equals the eval-mode training forward within 1e-5. */
async function expectExportEqualsForward(runner: StepRunner, heatmapStride = 4): Promise<void> {
  const rng = new Rng(5);
  const n = 3;
  const images = Float32Array.from({ length: n * 3 * H * W }, () => rng.normal());
  const expected = await runner.predict(images, n);
  const bytes = await runner.exportInferenceModel();
  const session = await ort.InferenceSession.create(bytes);
  try {
    expect(session.inputNames).toEqual(["input"]);
    const out = await session.run({ input: new ort.Tensor("float32", images, [n, 3, H, W]) });
    const heatmaps = out["heatmaps"]?.data as Float32Array;
    expect(heatmaps.length).toBe(n * K * (H / heatmapStride) * (W / heatmapStride));
    let worst = 0;
    let scale = 0;
    for (let i = 0; i < heatmaps.length; i++) {
      worst = Math.max(worst, Math.abs((heatmaps[i] as number) - (expected[i] as number)));
      scale = Math.max(scale, Math.abs(expected[i] as number));
    }
    expect(worst).toBeLessThanOrEqual(1e-5 * Math.max(1, scale));
  } finally {
    await session.release();
  }
}

describe("StepRunner", () => {
  let runner: StepRunner;
  beforeAll(async () => {
    runner = await StepRunner.create(base);
  });
  afterAll(async () => runner.release());

  it("learns: 300 steps on one fixed batch bring the loss below 10% of its start", async () => {
    const { first, last } = await fitFixedBatch(runner, makeBatch(1), 300);
    expect(last.step).toBe(300);
    expect(last.loss).toBeLessThan(0.1 * first.loss);
  });

  it("exports an inference model (BN folded) equal to the eval-mode training forward within 1e-5", async () => {
    await expectExportEqualsForward(runner);
  });

  it("keeps the main thread's event loop free while a long step runs in the worker", async () => {
    const big = await StepRunner.create({
      model: { architecture: "simplebaseline", inputWidth: 192, inputHeight: 256, numKeypoints: K, simpleBaseline: { depth: 18 } },
      training: { batchSize: 4, optimizer: { kind: "sgd" } },
      seed: 1,
      // One of this machine's two cores stays with the event loop, as a service would configure it.
      intraOpThreads: 1,
    });
    try {
      const rng = new Rng(2);
      const batch = {
        images: Float32Array.from({ length: 4 * 3 * 256 * 192 }, () => rng.normal()),
        targets: new Float32Array(4 * K * 64 * 48),
        targetWeights: new Float32Array(4 * K).fill(1),
      };
      const gaps: number[] = [];
      let last = performance.now();
      const timer = setInterval(() => {
        const now = performance.now();
        gaps.push(now - last);
        last = now;
      }, 5);
      const started = performance.now();
      await big.run(batch, 0.01);
      const stepMs = performance.now() - started;
      clearInterval(timer);
      expect(stepMs).toBeGreaterThan(100);
      // A step on the event loop would stall the timer for the whole step; other test files running on the
      // same two cores can still delay a tick now and then, so the bound is on the 95th percentile.
      const sorted = [...gaps].sort((a, b) => a - b);
      expect(sorted[Math.floor(sorted.length * 0.95)]).toBeLessThan(20);
      expect(Math.max(...gaps)).toBeLessThan(stepMs / 2);
    } finally {
      await big.release();
    }
  });
});

describe("StepRunner, lite with a 1/16 stage (CHANNELS with a fourth width)", () => {
  let runner: StepRunner;
  beforeAll(async () => {
    runner = await StepRunner.create({ ...base, model: { ...base.model, lite: { channels: [8, 16, 32, 64] } } });
  });
  afterAll(async () => runner.release());

  it("learns a fixed batch and exports an inference model equal to its eval-mode forward", async () => {
    const { first, last } = await fitFixedBatch(runner, makeBatch(2), 150);
    expect(last.loss).toBeLessThan(0.2 * first.loss);
    await expectExportEqualsForward(runner);
  });
});

describe("StepRunner, lite with half-resolution heatmaps (MODEL.HEATMAP_SIZE at half the input)", () => {
  let runner: StepRunner;
  beforeAll(async () => {
    runner = await StepRunner.create({ ...base, model: { ...base.model, lite: { channels: [8, 16, 32, 64], heatmapStride: 2 } } });
  });
  afterAll(async () => runner.release());

  it("learns a fixed batch of 32x24 targets and exports an inference model equal to its eval-mode forward", async () => {
    const { first, last } = await fitFixedBatch(runner, makeBatch(2, 2), 150);
    expect(last.loss).toBeLessThan(0.2 * first.loss);
    await expectExportEqualsForward(runner, 2);
  });
});

describe("StepRunner mixed precision (the fp16 graphs, run on the CPU provider to verify them)", () => {
  const amp: StepRunnerOptions = {
    ...base,
    training: { batchSize: B, optimizer: { kind: "sgd", momentum: 0.9 }, exposeGradients: true },
    mixedPrecision: true,
    emulateMixedPrecisionOnCpu: true,
  };
  /** max |a − b| / max |a| over the worst tensor of two maps. */
  const worstRelative = (a: ReadonlyMap<string, Float32Array>, b: ReadonlyMap<string, Float32Array>) => {
    let worst = 0;
    for (const [name, x] of a) {
      const y = b.get(name) as Float32Array;
      let diff = 0;
      let scale = 0;
      for (let i = 0; i < x.length; i++) {
        diff = Math.max(diff, Math.abs((x[i] as number) - (y[i] as number)));
        scale = Math.max(scale, Math.abs(x[i] as number));
      }
      worst = Math.max(worst, diff / scale);
    }
    return worst;
  };

  it("runs the convolutions and their gradients on fp16 casts, takes the loss scale and reports overflows", () => {
    const model = defineModel(amp.model);
    const FLOAT16 = 10n;
    const fp16Convs = (mixedPrecision: boolean) => {
      const { step } = compileTrainingGraphs(model, { ...amp.training, mixedPrecision });
      const nodes = step.graph?.node ?? [];
      const producers = new Map(nodes.flatMap((node) => node.output.map((output) => [output, node] as const)));
      // An fp16 tensor: a Cast to fp16, or a layout op (Transpose, Reshape, Slice, Pad) of one.
      const isFp16Cast = (name: string | undefined): boolean => {
        const node = name === undefined ? undefined : producers.get(name);
        if (node !== undefined && ["Transpose", "Reshape", "Slice", "Pad"].includes(node.opType)) return isFp16Cast(node.input[0]);
        return node?.opType === "Cast" && node.attribute.find((a) => a.name === "to")?.i === FLOAT16;
      };
      const convs = nodes.filter((node) => node.opType === "Conv" || node.opType === "ConvTranspose");
      return { step, convs: convs.length, fp16: convs.filter((node) => isFp16Cast(node.input[0]) && isFp16Cast(node.input[1])).length };
    };
    const mixed = fp16Convs(true);
    // Forward convolutions, and the input gradients of the backward pass (ConvTranspose of a Conv and back).
    expect(mixed.convs).toBeGreaterThanOrEqual(20);
    expect(mixed.fp16).toBe(mixed.convs);
    expect(mixed.step.graph?.input.map((input) => input.name)).toContain("loss_scale");
    expect(mixed.step.graph?.output.map((output) => output.name)).toContain("grads_finite");
    // Weights, optimizer state and BatchNorm statistics stay fp32 in and out.
    const FLOAT = 1;
    const state = [...(mixed.step.graph?.input ?? []), ...(mixed.step.graph?.output ?? [])].filter((v) => /^(param|slot|buffer)/.test(v.name));
    expect(state.length).toBeGreaterThan(0);
    expect(state.every((v) => v.type?.value.case === "tensorType" && v.type.value.value.elemType === FLOAT)).toBe(true);
    expect(fp16Convs(false).fp16).toBe(0);
  });

  it("matches the fp32 step's gradients within fp16 rounding, applies the same updates, and learns", async () => {
    const fp32 = await StepRunner.create({ ...amp, mixedPrecision: false, emulateMixedPrecisionOnCpu: false });
    const half = await StepRunner.create(amp);
    try {
      for (let i = 0; i < 3; i++) {
        const batch = makeBatch(i + 1);
        const a = await fp32.run(batch, 0.01);
        const b = await half.run(batch, 0.01);
        expect(b).toMatchObject({ updated: true, skipped: false, lossScale: 2 ** 16 });
        expect(Math.abs(b.loss - a.loss)).toBeLessThan(1e-3 * a.loss);
        expect(worstRelative(a.gradients as Map<string, Float32Array>, b.gradients as Map<string, Float32Array>)).toBeLessThan(5e-3);
      }
      expect(worstRelative((await fp32.weights()).params, (await half.weights()).params)).toBeLessThan(1e-4);
      const batch = makeBatch(9);
      const first = await half.run(batch, 0.05);
      let last = first;
      for (let i = 1; i < 150; i++) last = await half.run(batch, 0.05);
      expect(last.loss).toBeLessThan(0.5 * first.loss);
    } finally {
      await Promise.all([fp32.release(), half.release()]);
    }
  });

  it("accumulates unscaled gradients over micro-batches like the fp32 graphs do", async () => {
    const options: StepRunnerOptions = { ...amp, training: { batchSize: B, gradAccumSteps: 2, clipGradNorm: 1, optimizer: { kind: "sgd", momentum: 0.9 } } };
    const fp32 = await StepRunner.create({ ...options, mixedPrecision: false, emulateMixedPrecisionOnCpu: false });
    const half = await StepRunner.create(options);
    try {
      for (let i = 0; i < 4; i++) {
        const [a, b] = [await fp32.run(makeBatch(i + 1), 0.01), await half.run(makeBatch(i + 1), 0.01)];
        expect(b.updated).toBe(a.updated);
        if (a.updated) expect(Math.abs((b.gradNorm as number) - (a.gradNorm as number))).toBeLessThan(5e-3 * (a.gradNorm as number));
      }
      expect((await half.weights()).params.size).toBeGreaterThan(0);
      expect(worstRelative((await fp32.weights()).params, (await half.weights()).params)).toBeLessThan(1e-4);
    } finally {
      await Promise.all([fp32.release(), half.release()]);
    }
  });

  // (HRNet's step graph takes ~27 s to create even in fp32; its convolutions are the same layers.)
  it("SimpleBaseline-R18 (residual stages, three deconvolutions): the fp16 graph's gradients match fp32's within fp16 rounding", async () => {
    const config = { architecture: "simplebaseline", simpleBaseline: { depth: 18, baseWidth: 16, deconvFilters: [32, 32, 32] }, inputWidth: 64, inputHeight: 64, numKeypoints: K } as const;
    const options: StepRunnerOptions = { ...amp, model: config, training: { batchSize: 2, optimizer: { kind: "sgd" }, exposeGradients: true } };
    const [fp32, half] = await Promise.all([StepRunner.create({ ...options, mixedPrecision: false, emulateMixedPrecisionOnCpu: false }), StepRunner.create(options)]);
    try {
      const rng = new Rng(4);
      const batch = {
        images: Float32Array.from({ length: 2 * 3 * 64 * 64 }, () => rng.normal()),
        targets: Float32Array.from({ length: 2 * K * 16 * 16 }, () => rng.uniform() ** 8),
        targetWeights: new Float32Array(2 * K).fill(1),
      };
      const [a, b] = await Promise.all([fp32.run(batch, 0.01), half.run(batch, 0.01)]);
      expect(b.skipped).toBe(false);
      expect(Math.abs(b.loss - a.loss)).toBeLessThan(1e-3 * a.loss);
      expect(worstRelative(a.gradients as Map<string, Float32Array>, b.gradients as Map<string, Float32Array>)).toBeLessThan(1e-2);
    } finally {
      await Promise.all([fp32.release(), half.release()]);
    }
  });

  it("skips an overflowing update with weights and momentum untouched, backs the scale off, and grows it after finite updates", async () => {
    const runner = await StepRunner.create({ ...amp, lossScaling: { initScale: 2 ** 40, growthInterval: 2 } });
    try {
      await runner.run(makeBatch(1), 0.01); // a first, finite or not, so that the momentum buffers are not all zero
      const before = decodeTrainingState(await runner.exportState());
      const scale = before.lossScaler?.scale as number;
      const result = await runner.run(makeBatch(2), 0.01);
      expect(result).toMatchObject({ updated: true, skipped: true, lossScale: scale / 2, step: before.step + 1 });
      const after = decodeTrainingState(await runner.exportState());
      for (const [name, data] of before.tensors) {
        if (name.startsWith("buffer:")) continue; // BatchNorm statistics move in the forward pass, as in PyTorch
        expect(Buffer.from((after.tensors.get(name) as Float32Array).buffer).equals(Buffer.from(data.buffer)), name).toBe(true);
      }
      expect(after.lossScaler).toEqual({ scale: scale / 2, goodSteps: 0, skippedSteps: (before.lossScaler?.skippedSteps ?? 0) + 1 });
      // The scale halves until the fp16 gradients fit, then doubles after every two finite updates.
      const scales: number[] = [];
      const skipped: boolean[] = [];
      for (let i = 0; i < 40 && skipped.filter((s) => !s).length < 4; i++) {
        const r = await runner.run(makeBatch(3 + i), 0.01);
        scales.push(r.lossScale as number);
        skipped.push(r.skipped as boolean);
      }
      const firstFinite = skipped.indexOf(false);
      expect(firstFinite).toBeGreaterThan(0);
      expect(scales[firstFinite]).toBe(scales[firstFinite - 1]);
      expect(scales[firstFinite + 1]).toBe(2 * (scales[firstFinite] as number));
      expect(scales[firstFinite]).toBeLessThan(2 ** 40);
    } finally {
      await runner.release();
    }
  });

  it("resumes bit-exactly, loss scaler and skipped updates included", async () => {
    const options: StepRunnerOptions = { ...amp, training: { batchSize: B, optimizer: { kind: "adam" } }, lossScaling: { initScale: 2 ** 30, growthInterval: 3 } };
    const batches = [1, 2, 3, 4, 5, 6].map((seed) => makeBatch(seed));
    const uninterrupted = await StepRunner.create(options);
    const first = await StepRunner.create(options);
    const resumed = await StepRunner.create({ ...options, seed: 999 });
    try {
      for (const batch of batches) await uninterrupted.run(batch, 1e-3);
      for (const batch of batches.slice(0, 3)) await first.run(batch, 1e-3);
      const state = await first.exportState();
      expect(decodeTrainingState(state).lossScaler?.skippedSteps).toBeGreaterThan(0);
      await resumed.importState(state);
      for (const batch of batches.slice(3)) await resumed.run(batch, 1e-3);
      expect(Buffer.compare(Buffer.from(await uninterrupted.exportState()), Buffer.from(await resumed.exportState()))).toBe(0);
    } finally {
      await Promise.all([uninterrupted.release(), first.release(), resumed.release()]);
    }
  });
});

describe("StepRunner with data-parallel replicas", () => {
  /** Two batches of B joined: the replicated runner's batch of 2 x B. */
  const joined = (a: StepBatch, b: StepBatch): StepBatch => ({
    images: Float32Array.from([...a.images, ...b.images]),
    targets: Float32Array.from([...a.targets, ...b.targets]),
    targetWeights: Float32Array.from([...a.targetWeights, ...b.targetWeights]),
  });
  const training = { batchSize: B, clipGradNorm: 0.5, optimizer: { kind: "adam" as const, weightDecay: 1e-4 } };

  it("updates exactly as gradient accumulation over the same shards, with the mean loss of the batch", async () => {
    const replicated = await StepRunner.create({ ...base, training, replicas: 2 });
    const accumulated = await StepRunner.create({ ...base, training: { ...training, gradAccumSteps: 2 } });
    try {
      for (let step = 0; step < 3; step++) {
        const [a, b] = [makeBatch(2 * step + 1), makeBatch(2 * step + 2)];
        const first = await accumulated.run(a, 1e-3);
        const second = await accumulated.run(b, 1e-3);
        const result = await replicated.run(joined(a, b), 1e-3);
        expect(result).toMatchObject({ updated: true, step: step + 1, gradNorm: second.gradNorm });
        expect(result.loss).toBeCloseTo((first.loss + second.loss) / 2, 6);
      }
      const [x, y] = [await replicated.weights(), await accumulated.weights()];
      for (const [name, data] of x.params) expect(Buffer.from(data.buffer).equals(Buffer.from((y.params.get(name) as Float32Array).buffer)), name).toBe(true);
      const [sx, sy] = [decodeTrainingState(await replicated.exportState()), decodeTrainingState(await accumulated.exportState())];
      for (const [name, data] of sx.tensors) {
        if (!name.startsWith("slot:")) continue;
        expect(Buffer.from(data.buffer).equals(Buffer.from((sy.tensors.get(name) as Float32Array).buffer)), name).toBe(true);
      }
    } finally {
      await Promise.all([replicated.release(), accumulated.release()]);
    }
  });

  it("resumes bit-exactly from its state, which a single-replica run of the model also reads", async () => {
    const options: StepRunnerOptions = { ...base, training, replicas: 2 };
    const batches = [1, 2, 3, 4].map((seed) => joined(makeBatch(seed), makeBatch(seed + 10)));
    const uninterrupted = await StepRunner.create(options);
    const first = await StepRunner.create(options);
    const resumed = await StepRunner.create({ ...options, seed: 999 });
    const single = await StepRunner.create({ ...base, training });
    try {
      for (const batch of batches) await uninterrupted.run(batch, 1e-3);
      for (const batch of batches.slice(0, 2)) await first.run(batch, 1e-3);
      const state = await first.exportState();
      await resumed.importState(state);
      await single.importState(state);
      for (const batch of batches.slice(2)) await resumed.run(batch, 1e-3);
      expect(Buffer.compare(Buffer.from(await uninterrupted.exportState()), Buffer.from(await resumed.exportState()))).toBe(0);
    } finally {
      await Promise.all([uninterrupted.release(), first.release(), resumed.release(), single.release()]);
    }
  });

  it("refuses a batch that is not replicas x batchSize, and replicas with gradient accumulation", async () => {
    const runner = await StepRunner.create({ ...base, training, replicas: 2 });
    try {
      await expect(runner.run(makeBatch(1), 1e-3)).rejects.toSatisfy((e) => AppError.is(e, Code.INVALID_ARGUMENT) && /images: expected/.test(e.message));
    } finally {
      await runner.release();
    }
    await expect(StepRunner.create({ ...base, training: { ...training, gradAccumSteps: 2 }, replicas: 2 })).rejects.toSatisfy(
      (e) => AppError.is(e, Code.INVALID_ARGUMENT) && /cannot be combined/.test(e.message),
    );
  });
});

describe("StepRunner state", () => {
  it("export → import → continue gives weights bit-identical to an uninterrupted run", async () => {
    const options: StepRunnerOptions = { ...base, training: { batchSize: B, gradAccumSteps: 2, clipGradNorm: 0.5, optimizer: { kind: "sgd", momentum: 0.9, nesterov: true, weightDecay: 1e-4 } } };
    const batches = [1, 2, 3, 4, 5, 6, 7].map((seed) => makeBatch(seed));
    const lr = (i: number) => 0.01 * (1 - i / 10);
    const uninterrupted = await StepRunner.create(options);
    const first = await StepRunner.create(options);
    const resumed = await StepRunner.create({ ...options, seed: 999 });
    try {
      for (let i = 0; i < batches.length; i++) await uninterrupted.run(batches[i] as StepBatch, lr(i));
      // Stop mid-accumulation (after 3 micro-batches: one update and one pending micro-batch).
      for (let i = 0; i < 3; i++) await first.run(batches[i] as StepBatch, lr(i));
      const state = await first.exportState();
      await resumed.importState(state);
      for (let i = 3; i < batches.length; i++) await resumed.run(batches[i] as StepBatch, lr(i));
      const a = await uninterrupted.exportState();
      const b = await resumed.exportState();
      expect(Buffer.compare(Buffer.from(a), Buffer.from(b))).toBe(0);
    } finally {
      await Promise.all([uninterrupted.release(), first.release(), resumed.release()]);
    }
  });

  it("steps write the new state into second buffers: weights handed out earlier keep their values, and every step equals one from freshly imported state", async () => {
    const batches = [1, 2, 3, 4].map((seed) => makeBatch(seed));
    const engine = await StepEngine.create(base);
    const fresh = await StepEngine.create({ ...base, seed: 999 });
    try {
      const handedOut = engine.weights();
      const before = new Map([...handedOut.params].map(([name, data]) => [name, Float32Array.from(data)]));
      fresh.importState(engine.exportState());
      for (const batch of batches) {
        await engine.run(batch, 1e-3);
        // A new engine state (fresh tensors) for every step of the reference run.
        await fresh.run(batch, 1e-3);
        fresh.importState(fresh.exportState());
      }
      for (const [name, data] of handedOut.params) expect(data, name).toEqual(before.get(name));
      expect(engine.weights().params.get("final_layer.weight")).not.toEqual(before.get("final_layer.weight"));
      const a = engine.exportState();
      const b = fresh.exportState();
      for (const [name, data] of a.tensors) expect(Buffer.compare(Buffer.from(data.buffer), Buffer.from((b.tensors.get(name) as Float32Array).buffer)), name).toBe(0);
    } finally {
      await Promise.all([engine.release(), fresh.release()]);
    }
  });

  it("refuses a state of another model with a clear error", async () => {
    const other = await StepRunner.create({ ...base, model: { ...base.model, lite: { channels: [8, 16, 32] } } });
    const runner = await StepRunner.create(base);
    try {
      await expect(runner.importState(await other.exportState())).rejects.toSatisfy((e) => AppError.is(e, Code.INVALID_ARGUMENT) && /values, the model needs/.test(e.message));
      await expect(runner.importState(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]))).rejects.toSatisfy((e) => AppError.is(e, Code.DATA_LOSS));
    } finally {
      await Promise.all([other.release(), runner.release()]);
    }
  });
});

describe("StepRunner devices", () => {
  it("names the available providers when one is missing", async () => {
    await expect(StepRunner.create({ ...base, device: "cuda" })).rejects.toSatisfy(
      (e) => AppError.is(e, Code.FAILED_PRECONDITION) && /cuda is not available.*available: cpu/.test(e.message),
    );
  });

  it("refuses mixed precision on the CPU provider instead of silently training in fp32", async () => {
    await expect(StepRunner.create({ ...base, mixedPrecision: true })).rejects.toSatisfy(
      (e) => AppError.is(e, Code.FAILED_PRECONDITION) && /mixed precision \(fp16\) needs a GPU execution provider/.test(e.message),
    );
  });

  it("training sessions keep the thread count asked for, never spin-wait (they share cores with the data loader) and plan no per-run memory block", () => {
    expect(StepEngine.sessionOptions({ intraOpThreads: 1 })).toMatchObject({
      executionProviders: ["cpu"],
      intraOpNumThreads: 1,
      enableMemPattern: false,
      extra: { session: { intra_op: { allow_spinning: "0" } } },
    });
    expect(StepEngine.sessionOptions({})).not.toHaveProperty("intraOpNumThreads");
  });

  it("compiles its convolutions for the CPU provider's blocked kernels (fp32 only), and trains as the standard graphs do", async () => {
    const block = await nchwcBlockSize();
    expect((await graphConfig(base)).nchwcBlock).toBe(block);
    expect((await graphConfig({ ...base, blockedConvolutions: false })).nchwcBlock).toBeUndefined();
    expect((await graphConfig({ ...base, mixedPrecision: true, emulateMixedPrecisionOnCpu: true })).nchwcBlock).toBeUndefined();
    expect((await graphConfig({ ...base, device: "webgpu" })).nchwcBlock).toBeUndefined();
    const ops = (blocked: boolean) =>
      compileTrainingGraphs(defineModel(base.model), { ...base.training, ...(blocked ? { nchwcBlock: block as number } : {}) }).step.graph?.node.map((node) => `${node.domain}:${node.opType}`) ?? [];
    // The lite model's 16→32, 32→32 and 32→64 convolutions forward (7) and as stride-1 or deconvolution input
    // gradients (5); the 3-channel stem and the 17-heatmap head stay standard.
    expect(ops(true).filter((op) => op === "com.microsoft.nchwc:Conv")).toHaveLength(12);
    expect(ops(true).filter((op) => op === ":Conv")).toHaveLength(ops(false).filter((op) => op === ":Conv").length - 12);

    const options: StepRunnerOptions = { ...base, training: { batchSize: B, optimizer: { kind: "sgd", momentum: 0.9 }, clipGradNorm: 1 } };
    const engines = [await StepEngine.create(options), await StepEngine.create({ ...options, blockedConvolutions: false })] as const;
    try {
      for (let i = 0; i < 3; i++) {
        const [blocked, standard] = [await engines[0].run(makeBatch(i), 0.05), await engines[1].run(makeBatch(i), 0.05)];
        expect(Math.abs(blocked.loss - standard.loss)).toBeLessThanOrEqual(1e-5 * standard.loss);
        expect(Math.abs((blocked.gradNorm as number) - (standard.gradNorm as number))).toBeLessThanOrEqual(1e-5 * (standard.gradNorm as number));
      }
      const [blocked, standard] = [engines[0].weights().params, engines[1].weights().params];
      for (const [name, reference] of standard) {
        const values = blocked.get(name) as Float32Array;
        const scale = reference.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
        const worst = reference.reduce((m, v, j) => Math.max(m, Math.abs(v - (values[j] as number))), 0);
        expect(worst, name).toBeLessThanOrEqual(1e-5 * scale);
      }
    } finally {
      await Promise.all(engines.map((engine) => engine.release()));
    }
  });

  it("rejects batches of the wrong size", async () => {
    const runner = await StepRunner.create(base);
    try {
      await expect(runner.run({ ...makeBatch(1), images: new Float32Array(10) }, 1e-3)).rejects.toSatisfy(
        (e) => AppError.is(e, Code.INVALID_ARGUMENT) && /images: expected/.test(e.message),
      );
    } finally {
      await runner.release();
    }
  });
});
