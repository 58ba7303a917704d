import { SeededRandom } from "@poseloop/core";
import { COCO17 } from "@poseloop/pose";
import { describe, expect, it } from "vitest";
import {
  augmentationProblems,
  augmentRegion,
  halfBodyRegion,
  HRNET_AUGMENTATION,
  jitterColours,
  pasteOcclusion,
  resolveAugmentation,
  sampleAugmentation,
  upperBodyJoints,
} from "./augmentation.js";

const inputSize = { width: 192, height: 256 };

describe("sampleAugmentation", () => {
  it("draws the same augmentation from the same stream and stays within the HRNet ranges", () => {
    const config = resolveAugmentation({ ...HRNET_AUGMENTATION, occlusionProb: 0.5, colorJitter: 0.3 });
    const draws = Array.from({ length: 2000 }, (_, i) => sampleAugmentation(config, new SeededRandom(7, 1, i)));
    expect(sampleAugmentation(config, new SeededRandom(7, 1, 5))).toEqual(draws[5]);
    const rotated = draws.filter((d) => d.rotation !== 0);
    expect(rotated.length / draws.length).toBeCloseTo(0.6, 1);
    expect(Math.max(...rotated.map((d) => Math.abs(d.rotation)))).toBeLessThanOrEqual(80);
    expect(Math.max(...draws.map((d) => d.scale))).toBeLessThanOrEqual(1.35);
    expect(Math.min(...draws.map((d) => d.scale))).toBeGreaterThanOrEqual(0.65);
    expect(draws.filter((d) => d.flip).length / draws.length).toBeCloseTo(0.5, 1);
    expect(draws.filter((d) => d.halfBody).length / draws.length).toBeCloseTo(0.3, 1);
    expect(draws.filter((d) => d.occlusion !== undefined).length / draws.length).toBeCloseTo(0.5, 1);
    for (const d of draws) {
      for (const factor of [d.brightness, d.contrast, d.saturation]) expect(Math.abs(factor - 1)).toBeLessThanOrEqual(0.3);
      if (d.occlusion === undefined) continue;
      expect(d.occlusion.x + d.occlusion.width).toBeLessThanOrEqual(1);
      expect(d.occlusion.y + d.occlusion.height).toBeLessThanOrEqual(1);
    }
  });

  it("keeps the other augmentations of a sample when one is turned off", () => {
    const all = resolveAugmentation(HRNET_AUGMENTATION);
    const noRotation = resolveAugmentation({ ...HRNET_AUGMENTATION, rotationFactor: 0 });
    for (let i = 0; i < 20; i++) {
      const a = sampleAugmentation(all, new SeededRandom(3, i));
      const b = sampleAugmentation(noRotation, new SeededRandom(3, i));
      expect(b.rotation).toBe(0);
      expect({ ...b, rotation: a.rotation }).toEqual(a);
    }
  });

  it("does nothing with the defaults", () => {
    const none = sampleAugmentation(resolveAugmentation({}), new SeededRandom(1));
    expect(none).toMatchObject({ halfBody: false, scale: 1, rotation: 0, flip: false, occlusion: undefined, brightness: 1, contrast: 1, saturation: 1 });
  });

  it("names every invalid field", () => {
    const problems = augmentationProblems({ rotationFactor: -1, rotationProb: 2, scaleFactor: 1, halfBodyProb: Number.NaN, halfBodyMinKeypoints: 1.5, occlusionProb: -0.1, colorJitter: 3 });
    expect(problems).toHaveLength(7);
    expect(augmentationProblems(HRNET_AUGMENTATION)).toEqual([]);
  });
});

describe("half-body crops", () => {
  const upper = upperBodyJoints(COCO17);
  const keypoints = new Float32Array(34);
  for (let j = 0; j < 17; j++) {
    keypoints[2 * j] = 100 + (j % 2) * 40;
    keypoints[2 * j + 1] = 50 + j * 10;
  }
  const visibility = new Uint8Array(17).fill(2);

  it("splits COCO-17 as HRNet does: nose to wrists above, hips to ankles below", () => {
    expect(upper.map((u, j) => (u ? j : -1)).filter((j) => j >= 0)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  it("centres the crop on the chosen half's joints with 1.5 times their aspect-fixed box", () => {
    const region = halfBodyRegion(keypoints, visibility, upper, false, inputSize)!;
    // Lower joints 11..16: x in {100, 140}, y from 160 to 210.
    expect(region.center[0]).toBeCloseTo(120, 5);
    expect(region.center[1]).toBeCloseTo(185, 5);
    // Their box is 40 x 50, widened to the input's 3:4 as 40 x 53.3, times 1.5.
    expect(region.scale[0]).toBeCloseTo(60, 4);
    expect(region.scale[1]).toBeCloseTo(80, 4);
    const upperRegion = halfBodyRegion(keypoints, visibility, upper, true, inputSize)!;
    expect(upperRegion.center[1]).toBeCloseTo(100, 5);
  });

  it("applies only with more than halfBodyMinKeypoints labelled joints", () => {
    const config = resolveAugmentation({ halfBodyProb: 1, halfBodyMinKeypoints: 8 });
    const drawn = sampleAugmentation(config, new SeededRandom(1));
    const base = { center: [120, 130] as const, scale: [150, 200] as const, rotation: 0 };
    const few = new Uint8Array(17);
    few.fill(2, 0, 8);
    expect(augmentRegion(base, drawn, config, { keypoints, visibility: few, upper }, inputSize)).toEqual({ center: [120, 130], scale: [150, 200], rotation: 0 });
    const half = augmentRegion(base, drawn, config, { keypoints, visibility, upper }, inputSize);
    expect(half.center).not.toEqual([120, 130]);
  });
});

describe("pixel augmentation", () => {
  it("leaves pixels alone with unit factors and keeps them in 0-255 otherwise", () => {
    const planes = Float32Array.from({ length: 3 * 64 }, (_, i) => (i * 37) % 256);
    const copy = planes.slice();
    const unit = sampleAugmentation(resolveAugmentation({}), new SeededRandom(1));
    jitterColours(planes, 0, 64, unit);
    expect(planes).toEqual(copy);
    jitterColours(planes, 0, 64, { ...unit, brightness: 1.3, contrast: 0.7, saturation: 1.3 });
    expect(planes).not.toEqual(copy);
    expect(Math.min(...planes)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...planes)).toBeLessThanOrEqual(255);
    // Saturation 0 leaves grey: the three channels equal.
    jitterColours(planes, 0, 64, { ...unit, saturation: 0 });
    for (let i = 0; i < 64; i++) {
      expect(planes[i]).toBeCloseTo(planes[64 + i]!, 3);
      expect(planes[i]).toBeCloseTo(planes[128 + i]!, 3);
    }
  });

  it("pastes the occlusion rectangle where it says, in colour or noise", () => {
    const planes = new Float32Array(3 * 10 * 20);
    pasteOcclusion(planes, 0, 10, 20, { x: 0.2, y: 0.5, width: 0.3, height: 0.25, colour: [10, 20, 30], noiseSeed: 0 }, undefined);
    const painted = [...planes.subarray(0, 200).keys()].filter((i) => planes[i] !== 0);
    expect(painted).toHaveLength(3 * 5);
    expect(painted.every((i) => i % 10 >= 2 && i % 10 < 5 && Math.floor(i / 10) >= 10 && Math.floor(i / 10) < 15)).toBe(true);
    expect(planes[200 + painted[0]!]).toBe(20);
    const noisy = new Float32Array(3 * 10 * 20);
    pasteOcclusion(noisy, 0, 10, 20, { x: 0, y: 0, width: 1, height: 1, colour: undefined, noiseSeed: 5 }, new SeededRandom(5));
    expect(new Set(noisy).size).toBeGreaterThan(100);
  });
});
