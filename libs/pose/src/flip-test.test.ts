import { describe, expect, it } from "vitest";
import { averageOutputs, COCO17, flipHeatmaps, flipPermutation } from "@poseloop/pose";

describe("flipHeatmaps", () => {
  // Three planes of 2 × 4: plane p, row r, column c holds 100p + 10r + c.
  const flipped = Float32Array.from({ length: 3 * 2 * 4 }, (_, i) => 100 * Math.floor(i / 8) + 10 * Math.floor((i % 8) / 4) + (i % 4));
  const shape = { numKeypoints: 3, height: 2, width: 4 };
  const permutation = Int32Array.from([0, 2, 1]);

  it("mirrors each plane and swaps the planes of flip partners", () => {
    const out = flipHeatmaps(flipped, shape, permutation, { shift: false });
    expect(Array.from(out.subarray(0, 8))).toEqual([3, 2, 1, 0, 13, 12, 11, 10]);
    expect(Array.from(out.subarray(8, 16))).toEqual([203, 202, 201, 200, 213, 212, 211, 210]);
    expect(Array.from(out.subarray(16, 24))).toEqual([103, 102, 101, 100, 113, 112, 111, 110]);
  });

  it("shifts the mirrored planes one pixel right by default, the first column keeping its value", () => {
    const out = flipHeatmaps(flipped, shape, permutation);
    expect(Array.from(out.subarray(0, 8))).toEqual([3, 3, 2, 1, 13, 13, 12, 11]);
  });

  it("reads one instance of a batch", () => {
    const batch = new Float32Array(2 * 24);
    batch.set(flipped, 24);
    expect(Array.from(flipHeatmaps(batch, shape, permutation, { shift: false }, 1))).toEqual(Array.from(flipHeatmaps(flipped, shape, permutation, { shift: false })));
  });

  it("swaps COCO's left and right joints", () => {
    const permutation17 = flipPermutation(COCO17);
    const planes = Float32Array.from({ length: 17 }, (_, k) => k);
    const out = flipHeatmaps(planes, { numKeypoints: 17, height: 1, width: 1 }, permutation17, { shift: false });
    expect(Array.from(out)).toEqual([0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]);
  });

  it("refuses a permutation of the wrong size", () => {
    expect(() => flipHeatmaps(flipped, shape, Int32Array.from([0, 1]))).toThrow(RangeError);
  });
});

describe("averageOutputs", () => {
  it("averages the plain output of an instance with the mapped-back one", () => {
    const plain = Float32Array.from([9, 9, 2, 4]);
    expect(Array.from(averageOutputs(plain, 2, Float32Array.from([4, 0]), new Float32Array(2)))).toEqual([3, 2]);
  });
});
