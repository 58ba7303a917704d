import { describe, expect, it } from "vitest";
import { COCO17, flipPermutation, SimccCodec } from "@poseloop/pose";
import { seededRandom } from "./testing/seeded-random.js";

const K = 17;

describe("SimccCodec", () => {
  it("recovers joints within half a bin over random joints, input sizes, split ratios and sigmas", () => {
    const random = seededRandom(21);
    for (let trial = 0; trial < 50; trial++) {
      const inputSize = { width: 64 + Math.floor(random() * 256), height: 64 + Math.floor(random() * 256) };
      const splitRatio = [1, 1.5, 2, 3][Math.floor(random() * 4)] as number;
      const sigma = random() < 0.2 ? 0 : 2 + random() * 6;
      const codec = new SimccCodec({ inputSize, numKeypoints: K, splitRatio, sigmaX: sigma, sigmaY: sigma * 1.15 });
      const keypoints = Float32Array.from({ length: 2 * K }, (_, i) => random() * ((i % 2 === 0 ? inputSize.width : inputSize.height) - 1));
      const { targets, weights } = codec.encode(keypoints);
      expect(weights.every((w) => w === 1)).toBe(true);
      const decoded = codec.decode(targets);
      for (let i = 0; i < 2 * K; i++) expect(Math.abs((decoded.keypoints[i] as number) - (keypoints[i] as number))).toBeLessThanOrEqual(0.5 / splitRatio + 1e-4);
    }
  });

  it("lays out K × round(size × ratio) bins per axis and normalises Gaussian labels to sum about 1", () => {
    const codec = new SimccCodec({ inputSize: { width: 192, height: 256 }, numKeypoints: 1, sigmaX: 4.9, sigmaY: 5.66 });
    expect(codec.targetShape).toEqual([[1, 384], [1, 512]]);
    const [x, y] = codec.encode([96, 128]).targets as [Float32Array, Float32Array];
    expect(x.reduce((s, v) => s + v, 0)).toBeCloseTo(1, 5);
    expect(y.reduce((s, v) => s + v, 0)).toBeCloseTo(1, 5);
    expect(x[192]).toBeCloseTo(1 / (4.9 * Math.sqrt(2 * Math.PI)), 6);
  });

  it("writes one-hot labels with label smoothing spread over the other bins", () => {
    const codec = new SimccCodec({ inputSize: { width: 10, height: 10 }, numKeypoints: 1, splitRatio: 1, sigmaX: 0, sigmaY: 0, labelSmoothing: 0.1 });
    const [x] = codec.encode([3, 4]).targets as [Float32Array];
    expect(x[3]).toBeCloseTo(0.9, 6);
    expect(x[0]).toBeCloseTo(0.1 / 9, 6);
    expect(() => new SimccCodec({ inputSize: { width: 10, height: 10 }, numKeypoints: 1, labelSmoothing: 0.1 })).toThrow(/one-hot/);
  });

  it("gives unlabelled and out-of-crop joints weight 0 and empty labels", () => {
    const codec = new SimccCodec({ inputSize: { width: 192, height: 256 }, numKeypoints: 3, sigmaX: 4, sigmaY: 4 });
    const { targets, weights } = codec.encode([96, 128, 96, 128, 96, 400], [2, 0, 2]);
    expect(Array.from(weights)).toEqual([1, 0, 0]);
    const [x, y] = targets as [Float32Array, Float32Array];
    expect(x.subarray(384).every((v) => v === 0)).toBe(true);
    expect(y.subarray(512).every((v) => v === 0)).toBe(true);
  });

  it("scores a joint by the smaller of its two maxima and reads batch outputs at an index", () => {
    const codec = new SimccCodec({ inputSize: { width: 8, height: 4 }, numKeypoints: 1, splitRatio: 1 });
    const x = new Float32Array(2 * 8);
    const y = new Float32Array(2 * 4);
    x[8 + 5] = 0.9;
    y[4 + 2] = 0.6;
    const decoded = codec.decode([x, y], 1);
    expect(Array.from(decoded.keypoints)).toEqual([5, 2]);
    expect(decoded.scores[0]).toBeCloseTo(0.6, 6);
  });

  it("merges the mirrored crop's vectors: x reversed, pairs swapped, y only swapped", () => {
    const codec = new SimccCodec({ inputSize: { width: 4, height: 3 }, numKeypoints: 3, splitRatio: 1 });
    const permutation = Int32Array.from([0, 2, 1]);
    const plainX = new Float32Array(12);
    const plainY = new Float32Array(9);
    const flippedX = Float32Array.from([0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23]);
    const flippedY = Float32Array.from([0, 1, 2, 10, 11, 12, 20, 21, 22]);
    const [x, y] = codec.mergeFlipTest([plainX, plainY], [flippedX, flippedY], permutation);
    expect(Array.from(x ?? [])).toEqual([1.5, 1, 0.5, 0, 11.5, 11, 10.5, 10, 6.5, 6, 5.5, 5]);
    expect(Array.from(y ?? [])).toEqual([0, 0.5, 1, 10, 10.5, 11, 5, 5.5, 6]);
    expect(flipPermutation(COCO17)[1]).toBe(2);
  });

  it("refuses NaN keypoints and NaN outputs", () => {
    const codec = new SimccCodec({ inputSize: { width: 8, height: 4 }, numKeypoints: 1, splitRatio: 1 });
    expect(() => codec.encode([Number.NaN, 1])).toThrow(RangeError);
    expect(() => codec.decode([new Float32Array(8).fill(Number.NaN), new Float32Array(4)])).toThrow(/NaN/);
  });
});
