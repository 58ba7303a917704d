import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SeededRandom } from "@poseloop/core";
import { IMAGENET_NORMALIZATION } from "@poseloop/vision";
import { DetectionBatchBuilder, DetectionDataLoader, type DetectionImage } from "./detection-batch.js";
import { createDetectionTargets, encodeDetectionTargets, gaussianRadius } from "./detection-targets.js";
import { generateSyntheticDataset } from "./synthetic-dataset.js";
import { renderSyntheticScene } from "./synthetic-scene.js";
import { readCocoKeypoints } from "./coco-reader.js";
import { detectionImagesFromCoco } from "./detection-batch.js";

const GRID = { width: 8, height: 6, stride: 4, numClasses: 1 };

describe("CenterNet targets", () => {
  it("puts a peak of exactly 1 at the box centre's cell with the size and offset in cells there", () => {
    const targets = createDetectionTargets(2, GRID);
    // A 16x24 px box centred at (13, 9): cell (3, 2), offset (0.25, 0.25), size (4, 6) cells.
    expect(encodeDetectionTargets([{ x1: 5, y1: -3, x2: 21, y2: 21 }], GRID, targets, 1)).toBe(1);
    const cells = GRID.width * GRID.height;
    const at = (x: number, y: number): number => cells + y * GRID.width + x;
    expect(targets.centerTarget[at(3, 2)]).toBe(1);
    expect(targets.regMask[at(3, 2)]).toBe(1);
    expect(targets.regMask.reduce((a, b) => a + b, 0)).toBe(1);
    expect(targets.sizeTarget[2 * cells + 2 * GRID.width + 3]).toBeCloseTo(4, 6);
    expect(targets.sizeTarget[3 * cells + 2 * GRID.width + 3]).toBeCloseTo(6, 6);
    expect(targets.offsetTarget[2 * cells + 2 * GRID.width + 3]).toBeCloseTo(0.25, 6);
    expect(targets.offsetTarget[3 * cells + 2 * GRID.width + 3]).toBeCloseTo(0.25, 6);
    // Slot 0 untouched; neighbours of the peak below 1 (radius ⌊gaussianRadius(6, 4)⌋ = ⌊1.316⌋ = 1 here).
    expect(targets.centerTarget.subarray(0, cells).every((v) => v === 0)).toBe(true);
    expect(gaussianRadius(6, 4)).toBeCloseTo(1.31625, 4);
    const sigma = 3 / 6;
    expect(targets.centerTarget[at(4, 2)]).toBeCloseTo(Math.exp(-1 / (2 * sigma * sigma)), 6);
    expect(targets.centerTarget[at(5, 2)]).toBe(0);
  });

  it("keeps CenterNet's radius for a 20x40-cell box and overlapping splats at their maximum", () => {
    // CenterNet's gaussian_radius((40, 20), 0.7), its Python run on those numbers: 7.355850717012267.
    expect(gaussianRadius(40, 20)).toBeCloseTo(7.355850717012267, 12);
    const targets = createDetectionTargets(1, GRID);
    encodeDetectionTargets([{ x1: 0, y1: 0, x2: 16, y2: 16 }, { x1: 4, y1: 0, x2: 20, y2: 16 }], GRID, targets, 0);
    expect(targets.centerTarget[2 * GRID.width + 2]).toBe(1);
    expect(targets.centerTarget[2 * GRID.width + 3]).toBe(1);
    expect(targets.centerTarget.every((v) => v <= 1)).toBe(true);
  });

  it("leaves out boxes under a pixel and centres outside the input", () => {
    const targets = createDetectionTargets(1, GRID);
    expect(encodeDetectionTargets([{ x1: 3, y1: 3, x2: 3.5, y2: 9 }, { x1: 30, y1: 20, x2: 40, y2: 30 }], GRID, targets, 0)).toBe(0);
    expect(targets.regMask.every((v) => v === 0)).toBe(true);
  });
});

describe("DetectionBatchBuilder", () => {
  let dir: string;
  let source: DetectionImage[];
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "poseloop-detection-"));
    await generateSyntheticDataset({ dir, split: "val", count: 3, seed: 7, width: 96, height: 64, minPeople: 2, maxPeople: 3, blur: 0, noise: 0, jpegQuality: 95 });
    source = detectionImagesFromCoco(await readCocoKeypoints({ dir, split: "val" }));
  });
  afterAll(async () => rm(dir, { recursive: true, force: true }));

  it("letterboxes the whole picture top-left, pads the rest and puts a target at every person's centre", async () => {
    // 96x64 into 64x64: scale 2/3, the picture fills rows 0..42 and the rest is padding (0, normalized).
    const builder = new DetectionBatchBuilder(source, { inputSize: { width: 64, height: 64 }, stride: 4 });
    const batch = await builder.build(0, 0, [0, 1, 2]);
    expect(batch.size).toBe(3);
    const pad = (0 - IMAGENET_NORMALIZATION.mean[0]) / IMAGENET_NORMALIZATION.std[0];
    expect(batch.images[50 * 64 + 10]).toBeCloseTo(pad, 5);
    expect(batch.images[20 * 64 + 10]).not.toBeCloseTo(pad, 2);
    const cells = 16 * 16;
    batch.samples.forEach((sample, slot) => {
      expect(sample.scale).toBeCloseTo(2 / 3, 9);
      const people = source[slot]!.objects.length;
      expect(sample.objects).toBeLessThanOrEqual(people);
      expect(batch.targets.regMask.subarray(slot * cells, (slot + 1) * cells).reduce((a, b) => a + b, 0)).toBe(sample.objects);
      for (const object of source[slot]!.objects) {
        const [x, y, w, h] = object.bbox;
        if (w * (2 / 3) < 2 || h * (2 / 3) < 2) continue;
        const s = 2 / 3;
        const ix = Math.floor((x * s + (x + w) * s) / 2 / 4);
        const iy = Math.floor((y * s + (y + h) * s) / 2 / 4);
        expect(batch.targets.centerTarget[slot * cells + iy * 16 + ix]).toBe(1);
      }
    });
    expect(batch.samples.reduce((n, s) => n + s.objects, 0)).toBeGreaterThan(3);
  });

  it("mirrors pixels and boxes together under a flip, and draws the same augmentation for the same seed", async () => {
    const plain = new DetectionBatchBuilder(source, { inputSize: { width: 96, height: 64 }, stride: 4 });
    const flipped = new DetectionBatchBuilder(source, { inputSize: { width: 96, height: 64 }, stride: 4, augmentation: { flipProb: 1 } });
    const a = await plain.build(0, 0, [0]);
    const b = await flipped.build(0, 0, [0]);
    expect(b.samples[0]!.flipped).toBe(true);
    for (const [x, y] of [[3, 5], [40, 30], [90, 60]] as const) expect(b.images[y * 96 + x]).toBeCloseTo(a.images[y * 96 + (95 - x)]!, 4);
    const mirrorCells = (mask: Float32Array): number[] => [...mask.keys()].filter((i) => mask[i] === 1).map((i) => `${i % 24}`).map(Number).sort();
    expect(mirrorCells(b.targets.regMask).length).toBe(mirrorCells(a.targets.regMask).length);
    const scaled = { inputSize: { width: 64, height: 64 }, stride: 4, seed: 3, augmentation: { flipProb: 0.5, scaleFactor: 0.3 } };
    const one = await new DetectionBatchBuilder(source, scaled).build(2, 0, [0, 1, 2]);
    const two = await new DetectionBatchBuilder(source, scaled).build(2, 0, [0, 1, 2]);
    expect(two.images).toEqual(one.images);
    expect(two.targets.centerTarget).toEqual(one.targets.centerTarget);
    expect(new Set(one.samples.map((s) => s.scale.toFixed(4))).size).toBeGreaterThan(1);
  });

  it("validation loads every picture once in order; training drops the partial batch", async () => {
    const validation = new DetectionDataLoader(source, { inputSize: { width: 64, height: 64 }, stride: 4, batchSize: 2, mode: "validation", augmentation: { flipProb: 1 } });
    const ids: number[] = [];
    for await (const batch of validation.epoch(0)) ids.push(...batch.samples.map((s) => s.imageId));
    expect(ids).toEqual(source.map((s) => s.imageId));
    const training = new DetectionDataLoader(source, { inputSize: { width: 64, height: 64 }, stride: 4, batchSize: 2, mode: "train" });
    expect(training.batchesPerEpoch).toBe(1);
  });
});

describe("synthetic scenes for detection", () => {
  it("leave the pose datasets' scenes unchanged when the detection options are at their defaults", () => {
    for (let i = 0; i < 5; i++) {
      const base = { width: 96, height: 128, maxPeople: 3 };
      const a = renderSyntheticScene(new SeededRandom(9, i), base);
      const b = renderSyntheticScene(new SeededRandom(9, i), { ...base, crowd: 0, edgeCut: 0.27 });
      expect(b.people).toEqual(a.people);
      expect(Buffer.from(b.image.data).equals(Buffer.from(a.image.data))).toBe(true);
    }
  });

  it("crowds overlap people, edgeCut cuts more of them and personHeight sets their sizes", () => {
    const iou = (p: readonly number[], q: readonly number[]): number => {
      const w = Math.min(p[0]! + p[2]!, q[0]! + q[2]!) - Math.max(p[0]!, q[0]!);
      const h = Math.min(p[1]! + p[3]!, q[1]! + q[3]!) - Math.max(p[1]!, q[1]!);
      return w > 0 && h > 0 ? (w * h) / (p[2]! * p[3]! + q[2]! * q[3]! - w * h) : 0;
    };
    const tally = (options: object): { overlaps: number; cut: number; people: number; tallest: number } => {
      const result = { overlaps: 0, cut: 0, people: 0, tallest: 0 };
      for (let i = 0; i < 30; i++) {
        const scene = renderSyntheticScene(new SeededRandom(4, i), { width: 96, height: 96, minPeople: 3, maxPeople: 3, occlusion: 0, blur: 0, noise: 0, ...options });
        result.people += scene.people.length;
        for (const [k, p] of scene.people.entries()) {
          const [x, y, w, h] = p.bbox;
          if (x === 0 || y === 0 || x + w === 96 || y + h === 96) result.cut++;
          result.tallest = Math.max(result.tallest, h);
          for (const q of scene.people.slice(k + 1)) if (iou(p.bbox, q.bbox) > 0.2) result.overlaps++;
        }
      }
      return result;
    };
    const plain = tally({});
    const crowded = tally({ crowd: 1 });
    const cut = tally({ edgeCut: 1 });
    const small = tally({ personHeight: [0.15, 0.35] });
    expect(crowded.overlaps).toBeGreaterThan(plain.overlaps);
    expect(cut.cut / cut.people).toBeGreaterThan(plain.cut / plain.people + 0.1);
    expect(small.tallest).toBeLessThanOrEqual(Math.ceil(0.35 * 96 * 1.2));
    expect(plain.tallest).toBeGreaterThan(small.tallest);
  });
});
