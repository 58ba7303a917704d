import { readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { AppError, Code } from "@poseloop/core";
import { applyAffine, boxToCropRegion, COCO17, createKeypointCodec, cropInverseAffine, flipPermutation } from "@poseloop/pose";
import { makeTempDir } from "@poseloop/testkit";
import { createRgbImage, fillCircle, IMAGENET_NORMALIZATION } from "@poseloop/vision";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HRNET_AUGMENTATION, resolveAugmentation } from "./augmentation.js";
import type { PoseInstance } from "./coco-reader.js";
import { sampleTableFromImages } from "./sample-table.js";
import { builderConfig, DARK_CODEC, gridInstance, INPUT, sameBytes, texturedImage, UDP_CODEC, writePng } from "./testing/pose-fixtures.js";
import { TopDownBatchBuilder, type PoseBatch } from "./top-down-batch.js";

const PLANE = INPUT.width * INPUT.height;
const crop = (batch: PoseBatch, slot: number): Float32Array => batch.images.subarray(slot * 3 * PLANE, (slot + 1) * 3 * PLANE);
const heatmaps = (batch: PoseBatch, slot: number): Float32Array => batch.targets[0]!.subarray(slot * 17 * 48 * 64, (slot + 1) * 17 * 48 * 64);
const weights = (batch: PoseBatch, slot: number): Float32Array => batch.targetWeights.subarray(slot * 17, (slot + 1) * 17);
const request = (epoch: number, ...samples: number[]) => ({ epoch, index: 0, samples: Int32Array.from(samples) });

describe("TopDownBatchBuilder", () => {
  let temp: { path: string; remove: () => Promise<void> };
  let instances: PoseInstance[];
  beforeAll(async () => {
    temp = await makeTempDir("poseloop-batch-");
    const first = await writePng(temp.path, "first.png", texturedImage(320, 240));
    const second = await writePng(temp.path, "second.png", texturedImage(300, 260));
    instances = [
      gridInstance({ imagePath: first, imageWidth: 320, imageHeight: 240 }),
      gridInstance({ imagePath: first, imageWidth: 320, imageHeight: 240, annotationId: 2, bbox: { x: 150, y: 20, width: 100, height: 200 } }),
      gridInstance({ imagePath: second, imageWidth: 300, imageHeight: 260, annotationId: 3, imageId: 2, bbox: { x: 30, y: 60, width: 150, height: 150 } }),
    ];
  });
  afterAll(async () => {
    await temp.remove();
  });

  describe("augmentation", () => {
    const full = resolveAugmentation({ ...HRNET_AUGMENTATION, occlusionProb: 0.5, colorJitter: 0.3 });

    it("gives the same crop bytes for the same (seed, epoch, sample) in any batch, and others in another epoch", async () => {
      const a = await new TopDownBatchBuilder(builderConfig(instances, { augmentation: full })).build(request(3, 0, 1, 2));
      const b = await new TopDownBatchBuilder(builderConfig(instances, { augmentation: full })).build(request(3, 2, 0));
      expect(sameBytes(crop(b, 1), crop(a, 0))).toBe(true);
      expect(sameBytes(crop(b, 0), crop(a, 2))).toBe(true);
      expect(sameBytes(heatmaps(b, 1), heatmaps(a, 0))).toBe(true);
      expect(sameBytes(weights(b, 0), weights(a, 2))).toBe(true);
      expect(b.samples[1]).toEqual(a.samples[0]);
      const other = await new TopDownBatchBuilder(builderConfig(instances, { augmentation: full })).build(request(4, 0));
      expect(sameBytes(crop(other, 0), crop(a, 0))).toBe(false);
      const otherSeed = await new TopDownBatchBuilder(builderConfig(instances, { augmentation: full, seed: 2 })).build(request(3, 0));
      expect(sameBytes(crop(otherSeed, 0), crop(a, 0))).toBe(false);
    });

    it("mirrors the crop and swaps left and right joints under a flip", async () => {
      const builder = new TopDownBatchBuilder(builderConfig(instances, { augmentation: resolveAugmentation({ flip: true }) }));
      const epochs = await Promise.all(Array.from({ length: 12 }, (_, e) => builder.build(request(e, 0))));
      const flipped = epochs.find((batch) => batch.samples[0]!.flipped)!;
      const plain = epochs.find((batch) => !batch.samples[0]!.flipped)!;
      expect(flipped).toBeDefined();
      expect(plain).toBeDefined();
      const f = crop(flipped, 0);
      const p = crop(plain, 0);
      let worst = 0;
      for (let c = 0; c < 3; c++) {
        for (let y = 0; y < INPUT.height; y++) {
          for (let x = 0; x < INPUT.width; x++) {
            worst = Math.max(worst, Math.abs(f[c * PLANE + y * INPUT.width + x]! - p[c * PLANE + y * INPUT.width + (INPUT.width - 1 - x)]!));
          }
        }
      }
      expect(worst).toBeLessThan(1e-3);

      const codec = createKeypointCodec(UDP_CODEC);
      const swap = flipPermutation(COCO17);
      const decodedFlipped = codec.decode(flipped.targets, 0).keypoints;
      const decodedPlain = codec.decode(plain.targets, 0).keypoints;
      for (let j = 0; j < 17; j++) {
        const s = swap[j]!;
        expect(weights(flipped, 0)[j]).toBe(weights(plain, 0)[s]);
        expect(decodedFlipped[2 * j]).toBeCloseTo(INPUT.width - 1 - decodedPlain[2 * s]!, 1);
        expect(decodedFlipped[2 * j + 1]).toBeCloseTo(decodedPlain[2 * s + 1]!, 1);
      }
      // The left shoulder of the flipped crop is the person's right shoulder, back in the frame.
      const [x, y] = applyAffine(flipped.samples[0]!.cropToFrame, decodedFlipped[10]!, decodedFlipped[11]!);
      expect(x).toBeCloseTo(instances[0]!.keypoints[12]!, 0);
      expect(y).toBeCloseTo(instances[0]!.keypoints[13]!, 0);
    });

    it("puts each encoded joint where the image content moved (a bright dot, within 1 px)", async () => {
      const picture = createRgbImage(320, 240);
      const dot = [150.3, 100.6] as const;
      fillCircle(picture, dot[0], dot[1], 3, [255, 255, 255]);
      const path = await writePng(temp.path, "dot.png", picture);
      const keypoints = new Float32Array(34);
      keypoints.set(dot, 10);
      const visibility = new Uint8Array(17);
      visibility[5] = 2;
      const instance = gridInstance({ imagePath: path, imageWidth: 320, imageHeight: 240, bbox: { x: 90, y: 40, width: 130, height: 180 }, keypoints, visibility });
      const augmentation = resolveAugmentation({ flip: true, rotationFactor: 40, rotationProb: 1, scaleFactor: 0.35 });
      for (const codecSpec of [UDP_CODEC, DARK_CODEC]) {
        const builder = new TopDownBatchBuilder(builderConfig([instance], { augmentation, codec: codecSpec }));
        const seen = new Set<boolean>();
        for (let epoch = 0; epoch < 8; epoch++) {
          const batch = await builder.build(request(epoch, 0));
          const info = batch.samples[0]!;
          seen.add(info.flipped);
          const w = weights(batch, 0);
          const joint = info.flipped ? 6 : 5;
          expect([...w.keys()].filter((j) => w[j]! > 0)).toEqual([joint]);
          const decoded = builder.codec.decode(batch.targets, 0).keypoints;
          // Intensity-weighted centre of the red plane, back on the 0-255 scale.
          const red = crop(batch, 0).subarray(0, PLANE);
          let sum = 0;
          let sx = 0;
          let sy = 0;
          red.forEach((value, i) => {
            const level = value * IMAGENET_NORMALIZATION.std[0] + IMAGENET_NORMALIZATION.mean[0];
            if (level < 0.5) return;
            sum += level;
            sx += level * (i % INPUT.width);
            sy += level * Math.floor(i / INPUT.width);
          });
          expect(Math.hypot(sx / sum - decoded[2 * joint]!, sy / sum - decoded[2 * joint + 1]!)).toBeLessThan(1);
          // And the crop's affine takes it back to the dot in the frame.
          const [fx, fy] = applyAffine(info.cropToFrame, decoded[2 * joint]!, decoded[2 * joint + 1]!);
          expect(Math.hypot(fx - dot[0], fy - dot[1])).toBeLessThan(1);
        }
        expect(seen.size).toBe(2);
      }
    });
  });

  it("gives weight 0 to unlabelled joints and to joints outside the crop, 1 to labelled ones inside", async () => {
    const base = instances[0]!;
    const keypoints = base.keypoints.slice();
    const visibility = base.visibility.slice();
    visibility[0] = 0;
    visibility[3] = 0;
    visibility[7] = 1;
    keypoints[2 * 9] = 310; // far right of the 320-wide image, outside the box's crop
    keypoints[2 * 9 + 1] = 230;
    const batch = await new TopDownBatchBuilder(builderConfig([{ ...base, keypoints, visibility }])).build(request(0, 0));
    const w = weights(batch, 0);
    expect(w[0]).toBe(0);
    expect(w[3]).toBe(0);
    expect(w[9]).toBe(0);
    expect(w[7]).toBe(1);
    expect([...w].filter((v) => v === 1)).toHaveLength(14);
    expect(heatmaps(batch, 0).subarray(0, 48 * 64).every((v) => v === 0)).toBe(true);
  });

  it("crops validation boxes without augmentation and returns the region that maps back to the frame", async () => {
    const config = builderConfig(instances);
    const table = sampleTableFromImages([
      { imageId: 1, imagePath: instances[0]!.imagePath, width: 320, height: 240, boxes: [{ bbox: instances[0]!.bbox, score: 0.9 }, { bbox: instances[1]!.bbox, score: 0.4 }] },
    ]);
    const batch = await new TopDownBatchBuilder({ ...config, table }).build(request(0, 0, 1));
    expect(batch.targets).toEqual([]);
    expect(batch.targetWeights).toHaveLength(0);
    const region = boxToCropRegion(instances[1]!.bbox, INPUT);
    expect(batch.samples[1]).toEqual({ sampleIndex: 1, imageId: 1, annotationId: undefined, region, flipped: false, cropToFrame: cropInverseAffine(region, INPUT, { udp: true }), score: 0.4, area: 100 * 200 });
  });

  describe("bad samples", () => {
    let bad: Record<"corrupt" | "missing" | "nan" | "empty", PoseInstance>;
    beforeAll(async () => {
      const corruptPath = join(temp.path, "corrupt.jpg");
      await writeFile(corruptPath, Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 1, 2, 3, 4, 5, 6, 7, 8]));
      const good = instances[0]!;
      const keypoints = good.keypoints.slice();
      keypoints[7] = Number.NaN;
      bad = {
        corrupt: { ...good, imagePath: corruptPath, imageId: 7 },
        missing: { ...good, imagePath: join(temp.path, "missing.jpg"), imageId: 8 },
        nan: { ...good, keypoints, imageId: 9 },
        empty: { ...good, bbox: { x: 10, y: 10, width: 0, height: 30 }, imageId: 10 },
      };
    });

    const failure = async (instance: PoseInstance): Promise<AppError> => {
      const error: unknown = await new TopDownBatchBuilder(builderConfig([instance])).build(request(0, 0)).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(AppError);
      return error as AppError;
    };

    it("names the image of a corrupt JPEG, a missing file, a NaN keypoint and an empty box", async () => {
      const corrupt = await failure(bad.corrupt);
      expect(corrupt.code).toBe(Code.INVALID_ARGUMENT);
      expect(corrupt.message).toMatch(/^image 7 \(.+\/corrupt\.jpg\): the jpeg image \(18 bytes\) is (corrupt|truncated)/);
      const missing = await failure(bad.missing);
      expect(missing.code).toBe(Code.NOT_FOUND);
      expect(missing.message).toMatch(/^image 8 \(.+\/missing\.jpg\) not found$/);
      const nan = await failure(bad.nan);
      expect(nan.code).toBe(Code.INVALID_ARGUMENT);
      expect(nan.message).toMatch(/^image 9 \(.+\/first\.png\): keypoint 3 \(left_ear\) of annotation 1 is not a finite number$/);
      const empty = await failure(bad.empty);
      expect(empty.code).toBe(Code.INVALID_ARGUMENT);
      expect(empty.message).toMatch(/^image 10 \(.+\/first\.png\): the box of annotation 1 \[10, 10, 0, 30\] is empty or not finite$/);
    });

    it("under the skip policy, lists them and leaves their slots empty with weight 0", async () => {
      const all = [instances[0]!, bad.corrupt, bad.missing, bad.nan, bad.empty, instances[2]!];
      const builder = new TopDownBatchBuilder(builderConfig(all, { badSamples: "skip" }));
      const batch = await builder.build(request(0, 0, 1, 2, 3, 4, 5));
      expect(batch.skipped.map((s) => [s.sampleIndex, s.imageId, s.code])).toEqual([
        [1, 7, Code.INVALID_ARGUMENT],
        [2, 8, Code.NOT_FOUND],
        [3, 9, Code.INVALID_ARGUMENT],
        [4, 10, Code.INVALID_ARGUMENT],
      ]);
      for (const slot of [1, 2, 3, 4]) {
        expect(crop(batch, slot).every((v) => v === 0)).toBe(true);
        expect(weights(batch, slot).every((v) => v === 0)).toBe(true);
        expect(heatmaps(batch, slot).every((v) => v === 0)).toBe(true);
      }
      const good = await new TopDownBatchBuilder(builderConfig(all)).build(request(0, 5, 0));
      expect(sameBytes(crop(batch, 0), crop(good, 1))).toBe(true);
      expect(sameBytes(crop(batch, 5), crop(good, 0))).toBe(true);
      expect(sameBytes(heatmaps(batch, 5), heatmaps(good, 0))).toBe(true);
      expect(sameBytes(weights(batch, 5), weights(good, 0))).toBe(true);
    });
  });

  it("serves identical crops from the disk cache, which survives the process's memory", async () => {
    const diskDir = join(temp.path, "cache");
    const augmentation = resolveAugmentation(HRNET_AUGMENTATION);
    const plain = await new TopDownBatchBuilder(builderConfig(instances, { augmentation })).build(request(1, 0, 1, 2));
    const writer = new TopDownBatchBuilder(builderConfig(instances, { augmentation, diskDir }));
    const first = await writer.build(request(1, 0, 1, 2));
    expect(writer.images.stats).toMatchObject({ decoded: 2, diskHits: 0, diskWriteFailures: 0 });
    const reader = new TopDownBatchBuilder(builderConfig(instances, { augmentation, diskDir, memoryBytes: 0 }));
    const second = await reader.build(request(1, 0, 1, 2));
    expect(reader.images.stats).toMatchObject({ decoded: 0, diskHits: 2, memoryHits: 0 });
    for (const batch of [first, second]) {
      expect(sameBytes(batch.images, plain.images)).toBe(true);
      expect(sameBytes(batch.targets[0]!, plain.targets[0]!)).toBe(true);
      expect(sameBytes(batch.targetWeights, plain.targetWeights)).toBe(true);
    }
    const folders = await readdir(diskDir);
    const files = (await Promise.all(folders.map((folder) => readdir(join(diskDir, folder))))).flat();
    expect(files.filter((name) => name.endsWith(".rgb"))).toHaveLength(2);
  });
});
