import { readFileSync } from "node:fs";
import { encodeModel, GraphBuilder } from "@poseloop/onnx";
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildInferenceModel } from "../compile/forward-graph.js";
import { DetectorHead, ModelKind } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { modelManifest } from "../manifest.js";
import { initialize } from "../nn/parameters.js";
import { add, scale } from "../ops/basic.js";
import { centerFocalLoss, maskedL1Loss } from "../ops/loss.js";
import { Rng } from "../rng.js";
import { StepEngine, type StepRunnerOptions } from "../runner/step-engine.js";
import { Tape, type Sym } from "../tape.js";
import { DETECTOR_STRIDE, detectionStepBatch, type DetectionTargets } from "./detector-lite.js";
import { defineModel, modelConfigProblems, type ModelConfig } from "./model-config.js";

/** CenterNet's focal loss written out per cell: the reference the graph is held to. */
function referenceFocal(logits: Float32Array, target: Float32Array): number {
  let positives = 0;
  let sum = 0;
  logits.forEach((x, i) => {
    const p = Math.min(Math.max(1 / (1 + Math.exp(-x)), 1e-4), 1 - 1e-4);
    const gt = target[i] as number;
    if (gt === 1) {
      positives++;
      sum += Math.log(p) * (1 - p) ** 2;
    } else {
      sum += Math.log(1 - p) * p ** 2 * (1 - gt) ** 4;
    }
  });
  return -sum / Math.max(1, positives);
}

/** CenterNet's RegL1Loss per selected value: pred, target [B, C, h, w], mask [B, 1, h, w]. */
function referenceL1(pred: Float32Array, target: Float32Array, mask: Float32Array, [b, c, h, w]: readonly number[]): number {
  let sum = 0;
  let selected = 0;
  for (let n = 0; n < (b as number); n++) {
    for (let k = 0; k < (c as number); k++) {
      for (let cell = 0; cell < (h as number) * (w as number); cell++) {
        const m = mask[n * (h as number) * (w as number) + cell] as number;
        const i = (n * (c as number) + k) * (h as number) * (w as number) + cell;
        sum += m * Math.abs((pred[i] as number) - (target[i] as number));
        selected += m;
      }
    }
  }
  return sum / (selected + 1e-4);
}

interface LossFixture {
  shapes: { centers: number[]; pair: number[]; mask: number[] };
  weights: { size: number; offset: number };
  inputs: Record<"logits" | "sizes" | "offsets" | "center_target" | "size_target" | "offset_target" | "reg_mask", number[]>;
  loss: { focal: number; size: number; offset: number; total: number };
  grads: Record<"logits" | "sizes" | "offsets", number[]>;
}

/** The detector's loss terms on given head outputs, and the gradients of their weighted sum, through onnxruntime. */
async function runLoss(fixture: LossFixture) {
  const g = new GraphBuilder({ name: "detector_loss" });
  const t = new Tape(g);
  const { centers, pair, mask } = fixture.shapes;
  const head = (name: string, shape: number[]) => t.sym(g.input(name, "float32", shape), shape, true);
  const [logits, sizes, offsets] = [head("logits", centers), head("sizes", pair), head("offsets", pair)];
  const input = (name: string, shape: number[]) => g.input(name, "float32", shape);
  const maskValue = input("reg_mask", mask);
  const focal = centerFocalLoss(t, logits, input("center_target", centers));
  const size = maskedL1Loss(t, sizes, input("size_target", pair), maskValue);
  const offset = maskedL1Loss(t, offsets, input("offset_target", pair), maskValue);
  const total = add(t, add(t, focal, scale(t, size, fixture.weights.size)), scale(t, offset, fixture.weights.offset));
  const grads = t.gradients(total, [logits, sizes, offsets], t.sym(g.scalar(1), [], false));
  for (const [name, sym] of [["focal", focal], ["size", size], ["offset", offset], ["total", total]] as const) g.output(sym.value, name);
  for (const [name, sym] of [["logits", logits], ["sizes", sizes], ["offsets", offsets]] as const) g.output((grads.get(sym) as Sym).value, `grad_${name}`);
  const session = await ort.InferenceSession.create(encodeModel(g.build()));
  try {
    const shapes: Record<string, number[]> = { logits: centers, center_target: centers, sizes: pair, offsets: pair, size_target: pair, offset_target: pair, reg_mask: mask };
    const feeds = Object.fromEntries(Object.entries(fixture.inputs).map(([name, values]) => [name, new ort.Tensor("float32", Float32Array.from(values), shapes[name] as number[])]));
    const out = await session.run(feeds);
    const read = (name: string) => out[name]?.data as Float32Array;
    return { focal: read("focal")[0] as number, size: read("size")[0] as number, offset: read("offset")[0] as number, total: read("total")[0] as number, grads: { logits: read("grad_logits"), sizes: read("grad_sizes"), offsets: read("grad_offsets") } };
  } finally {
    await session.release();
  }
}

const fixture = JSON.parse(readFileSync(new URL("../../fixtures/detector-loss.json", import.meta.url), "utf8")) as LossFixture;

describe("the detector's loss", () => {
  it("matches CenterNet's loss written out per cell", async () => {
    const got = await runLoss(fixture);
    const f32 = (name: keyof LossFixture["inputs"]) => Float32Array.from(fixture.inputs[name]);
    expect(got.focal).toBeCloseTo(referenceFocal(f32("logits"), f32("center_target")), 4);
    expect(got.size).toBeCloseTo(referenceL1(f32("sizes"), f32("size_target"), f32("reg_mask"), fixture.shapes.pair), 5);
    expect(got.offset).toBeCloseTo(referenceL1(f32("offsets"), f32("offset_target"), f32("reg_mask"), fixture.shapes.pair), 5);
  });

  it("matches PyTorch running CenterNet's own loss code (gathered at the objects' indices), gradients included", async () => {
    const got = await runLoss(fixture);
    for (const term of ["focal", "size", "offset", "total"] as const) expect(Math.abs(got[term] - fixture.loss[term]), term).toBeLessThan(1e-5 * Math.max(1, Math.abs(fixture.loss[term])));
    for (const name of ["logits", "sizes", "offsets"] as const) {
      const expected = fixture.grads[name];
      const scaleOf = Math.max(...expected.map(Math.abs));
      const worst = expected.reduce((w, e, i) => Math.max(w, Math.abs(e - (got.grads[name][i] as number))), 0);
      expect(worst, name).toBeLessThan(1e-5 * Math.max(1, scaleOf));
    }
    // The clamped cells get no gradient, in PyTorch as here.
    expect(got.grads.logits[5]).toBe(0);
  });
});

describe("the zoo's person detector", () => {
  it("exports exactly centers (probabilities), sizes and offsets at a quarter of the input, with a dynamic batch", async () => {
    const config: ModelConfig = { architecture: "detector-lite", inputWidth: 64, inputHeight: 48, numKeypoints: 0 };
    const model = defineModel(config);
    const rng = new Rng(1);
    const weights = {
      params: new Map(model.registry.params.map((spec) => [spec.name, initialize(spec, rng)])),
      buffers: new Map(model.registry.buffers.map((spec) => [spec.name, initialize(spec, rng)])),
    };
    const proto = buildInferenceModel(model, weights);
    expect(proto.graph?.node.some((node) => node.opType === "BatchNormalization")).toBe(false);
    const session = await ort.InferenceSession.create(encodeModel(proto));
    try {
      expect(session.inputNames).toEqual(["input"]);
      expect(session.outputNames).toEqual(["centers", "sizes", "offsets"]);
      for (const batch of [1, 3]) {
        const input = new ort.Tensor("float32", Float32Array.from({ length: batch * 3 * 48 * 64 }, () => rng.normal()), [batch, 3, 48, 64]);
        const out = await session.run({ input });
        expect(out["centers"]?.dims).toEqual([batch, 1, 12, 16]);
        expect(out["sizes"]?.dims).toEqual([batch, 2, 12, 16]);
        expect(out["offsets"]?.dims).toEqual([batch, 2, 12, 16]);
        const centers = out["centers"]?.data as Float32Array;
        expect(centers.every((p) => p > 0 && p < 1)).toBe(true);
        // The −2.19 bias: the untrained detector finds nothing anywhere (CenterNet's start, σ(−2.19) = 0.1).
        const mean = centers.reduce((a, b) => a + b, 0) / centers.length;
        expect(mean).toBeGreaterThan(0.03);
        expect(mean).toBeLessThan(0.3);
      }
    } finally {
      await session.release();
    }
  });

  it("describes itself in its manifest as a CenterNet detector at stride 4, without a codec or keypoints", () => {
    const manifest = modelManifest({ architecture: "detector-lite", inputWidth: 128, inputHeight: 96, numKeypoints: 0, detector: { numClasses: 2 } });
    expect(manifest.kind).toBe(ModelKind.DETECTOR);
    expect(manifest.detector).toMatchObject({ head: DetectorHead.CENTERNET, numClasses: 2, personClass: 0, strides: [4], outputNames: ["centers", "sizes", "offsets"] });
    expect([manifest.input?.width, manifest.input?.height]).toEqual([128, 96]);
    expect(manifest.codec).toBeUndefined();
    expect(manifest.keypointSchema).toBeUndefined();
  });

  it("reports every problem of an invalid detector config", () => {
    const problems = modelConfigProblems({
      architecture: "detector-lite",
      inputWidth: 36,
      inputHeight: 48,
      numKeypoints: 0,
      detector: { channels: [8, 16] as never, numClasses: 0, headChannels: 2.5, sizeWeight: -1 },
    }).join("\n");
    expect(problems).toMatch(/3 or 4 widths, got 2/);
    expect(problems).toMatch(/divisible by 8, got 36x48/);
    expect(problems).toMatch(/detector classes must be a positive integer, got 0/);
    expect(problems).toMatch(/head width must be a positive integer, got 2.5/);
    expect(problems).toMatch(/size loss weight must be a finite number >= 0, got -1/);
    // The default backbone reaches 1/16.
    expect(modelConfigProblems({ architecture: "detector-lite", inputWidth: 40, inputHeight: 48, numKeypoints: 0 }).join("\n")).toMatch(/divisible by 16/);
  });
});

// Training: a 32x32 detector with 2 images of 2-3 bright boxes each, on an 8x8 grid.
const S = 32;
const G = S / DETECTOR_STRIDE;
const B = 2;
const BOXES: readonly (readonly [number, number, number, number, number])[] = [
  // image, x1, y1, x2, y2 in input pixels
  [0, 3, 4, 15, 24],
  [0, 18, 10, 30, 30],
  [1, 6, 2, 14, 12],
  [1, 16, 14, 28, 22],
  [1, 2, 20, 10, 31],
];

/** Images with each box filled brighter than the noise around it, and CenterNet's targets for the boxes. */
function syntheticBatch(): { images: Float32Array; targets: DetectionTargets; centers: { image: number; ix: number; iy: number; w: number; h: number }[] } {
  const rng = new Rng(3);
  const images = Float32Array.from({ length: B * 3 * S * S }, () => rng.normal() * 0.3);
  const targets: DetectionTargets = {
    centerTarget: new Float32Array(B * G * G),
    sizeTarget: new Float32Array(B * 2 * G * G),
    offsetTarget: new Float32Array(B * 2 * G * G),
    regMask: new Float32Array(B * G * G),
  };
  const centers = BOXES.map(([image, x1, y1, x2, y2]) => {
    for (let c = 0; c < 3; c++) for (let y = y1; y < y2; y++) for (let x = x1; x < x2; x++) images[((image * 3 + c) * S + y) * S + x] = (images[((image * 3 + c) * S + y) * S + x] as number) + 1.5;
    const [cx, cy, w, h] = [(x1 + x2) / 2 / DETECTOR_STRIDE, (y1 + y2) / 2 / DETECTOR_STRIDE, (x2 - x1) / DETECTOR_STRIDE, (y2 - y1) / DETECTOR_STRIDE];
    const [ix, iy] = [Math.floor(cx), Math.floor(cy)];
    for (let y = 0; y < G; y++) {
      for (let x = 0; x < G; x++) {
        const i = (image * G + y) * G + x;
        targets.centerTarget[i] = Math.max(targets.centerTarget[i] as number, Math.exp(-((x - ix) ** 2 + (y - iy) ** 2) / 2));
      }
    }
    const cell = iy * G + ix;
    targets.sizeTarget[image * 2 * G * G + cell] = w;
    targets.sizeTarget[(image * 2 + 1) * G * G + cell] = h;
    targets.offsetTarget[image * 2 * G * G + cell] = cx - ix;
    targets.offsetTarget[(image * 2 + 1) * G * G + cell] = cy - iy;
    targets.regMask[image * G * G + cell] = 1;
    return { image, ix, iy, w, h };
  });
  return { images, targets, centers };
}

const training: StepRunnerOptions = {
  model: { architecture: "detector-lite", inputWidth: S, inputHeight: S, numKeypoints: 0, detector: { channels: [8, 16, 16, 16] } },
  training: { batchSize: B, optimizer: { kind: "adam" } },
  seed: 5,
  intraOpThreads: 1,
};

describe("training the detector with the StepEngine", () => {
  let engine: StepEngine;
  beforeAll(async () => {
    engine = await StepEngine.create(training);
  });
  afterAll(async () => engine.release());

  it("refuses a batch without the loss inputs, naming them", async () => {
    const { images } = syntheticBatch();
    await expect(engine.run({ images, targets: new Float32Array(0), targetWeights: new Float32Array(0) }, 1e-3)).rejects.toThrow(/lacks the loss inputs center_target, size_target, offset_target, reg_mask/);
    expect(engine.step).toBe(0);
  });

  it("learns a fixed batch: the loss falls below 5% of its start and the centers peak at the boxes with their sizes", async () => {
    const { images, targets, centers } = syntheticBatch();
    const batch = detectionStepBatch(images, targets);
    const first = await engine.run(batch, 3e-3);
    let last = first;
    for (let i = 1; i < 300; i++) last = await engine.run(batch, 3e-3);
    expect(last.loss).toBeLessThan(0.05 * first.loss);
    const out = await engine.predictOutputs(images, B);
    const probs = out["centers"] as Float32Array;
    const sizes = out["sizes"] as Float32Array;
    for (const { image, ix, iy, w, h } of centers) {
      const cell = iy * G + ix;
      expect(probs[image * G * G + cell], `box at ${ix},${iy}`).toBeGreaterThan(0.8);
      expect(Math.abs((sizes[image * 2 * G * G + cell] as number) - w)).toBeLessThan(0.15 * w);
      expect(Math.abs((sizes[(image * 2 + 1) * G * G + cell] as number) - h)).toBeLessThan(0.15 * h);
    }
    // Away from every box's splat, nothing is found.
    const far = probs.filter((_, i) => (targets.centerTarget[i] as number) < 0.01);
    expect(Math.max(...far)).toBeLessThan(0.1);
  });

  it("takes the same update with 2 data-parallel replicas as with 2 accumulated micro-batches, and resumes from its state", async () => {
    const { images, targets } = syntheticBatch();
    const withReplicas = await StepEngine.create({ ...training, training: { ...training.training, batchSize: 1 }, replicas: 2 });
    const accumulated = await StepEngine.create({ ...training, training: { ...training.training, batchSize: 1, gradAccumSteps: 2 } });
    try {
      const half = (data: Float32Array, i: number) => data.slice((i * data.length) / 2, ((i + 1) * data.length) / 2);
      const part = (i: number) => detectionStepBatch(half(images, i), { centerTarget: half(targets.centerTarget, i), sizeTarget: half(targets.sizeTarget, i), offsetTarget: half(targets.offsetTarget, i), regMask: half(targets.regMask, i) });
      const state = accumulated.exportState();
      await withReplicas.run(detectionStepBatch(images, targets), 1e-3);
      await accumulated.run(part(0), 1e-3);
      const update = await accumulated.run(part(1), 1e-3);
      expect(update.updated).toBe(true);
      const a = withReplicas.weights().params;
      const b = accumulated.weights().params;
      for (const [name, value] of a) expect(Buffer.from(value.buffer).equals(Buffer.from((b.get(name) as Float32Array).buffer)), name).toBe(true);
      // Resume: back to the saved state, the same two micro-batches give the same weights bit for bit.
      const after = accumulated.exportState();
      accumulated.importState(state);
      await accumulated.run(part(0), 1e-3);
      await accumulated.run(part(1), 1e-3);
      const resumed = accumulated.exportState();
      for (const [name, value] of after.tensors) expect(Buffer.from(value.buffer).equals(Buffer.from((resumed.tensors.get(name) as Float32Array).buffer)), name).toBe(true);
    } finally {
      await withReplicas.release();
      await accumulated.release();
    }
  });
});
