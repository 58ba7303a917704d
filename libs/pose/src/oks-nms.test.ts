import { describe, expect, it } from "vitest";
import { COCO17, instanceScore, oksNms, type OksNmsCandidate } from "@poseloop/pose";

const K = 17;

function pose(x: number, y: number, score: number, area = 10000): OksNmsCandidate & { keypoints: number[] } {
  const keypoints = Array.from({ length: K }, (_, j) => [x + (j % 4) * 20, y + j * 10, 0.9]).flat();
  return { keypoints, score, area };
}

describe("oksNms", () => {
  it("keeps the best of near-duplicates and the distinct people, best first", () => {
    const candidates = [pose(100, 100, 0.7), pose(101, 100, 0.9), pose(400, 100, 0.8), pose(100, 101, 0.6)];
    expect(oksNms(candidates, 0.9)).toEqual([1, 2]);
  });

  it("keeps everything when no pair is similar enough", () => {
    const candidates = [pose(100, 100, 0.7), pose(140, 100, 0.9)];
    expect(oksNms(candidates, 0.9)).toEqual([1, 0]);
    expect(oksNms(candidates, 0)).toEqual([1]);
  });

  it("scales the similarity by the mean of the two areas", () => {
    // 2 px apart: OKS ≈ 0.98 on areas of 10,000 px², ≈ 0.80 on 900 px².
    expect(oksNms([pose(100, 100, 0.9), pose(102, 100, 0.8)], 0.9)).toEqual([0]);
    expect(oksNms([pose(100, 100, 0.9, 900), pose(102, 100, 0.8, 900)], 0.9)).toEqual([0, 1]);
  });

  it("only compares keypoints both poses see when given a visibility threshold", () => {
    const a = pose(100, 100, 0.9);
    const b = { ...pose(100, 100, 0.8), keypoints: pose(100, 100, 0.8).keypoints.map((v, i) => (i % 3 === 2 ? 0.1 : i < 3 ? v : v + 500)) };
    const bSeesOnlyTheNose = { ...b, keypoints: b.keypoints.map((v, i) => (i === 2 ? 0.9 : v)) };
    expect(oksNms([a, bSeesOnlyTheNose], 0.9)).toEqual([0, 1]);
    expect(oksNms([a, bSeesOnlyTheNose], 0.9, { visibilityThreshold: 0.2 })).toEqual([0]);
  });

  it("refuses keypoints that do not match the sigmas", () => {
    expect(() => oksNms([{ keypoints: [1, 2, 3], score: 1, area: 1 }], 0.9)).toThrow(RangeError);
    expect(oksNms([{ keypoints: [1, 2, 3], score: 1, area: 1 }], 0.9, { sigmas: [COCO17.sigmas[0] as number] })).toEqual([0]);
  });
});

describe("instanceScore", () => {
  it("averages the keypoint scores above the threshold and multiplies by the box score", () => {
    expect(instanceScore([0.9, 0.1, 0.5])).toBeCloseTo(0.7, 12);
    expect(instanceScore([0.9, 0.1, 0.5], 0.5)).toBeCloseTo(0.35, 12);
    expect(instanceScore([0.1, 0.2])).toBe(0);
  });
});
