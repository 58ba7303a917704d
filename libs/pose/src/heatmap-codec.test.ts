import { describe, expect, it } from "vitest";
import { COCO17, createKeypointCodec, flipPermutation, MsraHeatmapCodec, UdpHeatmapCodec, type KeypointCodec } from "@poseloop/pose";
import { seededRandom } from "./testing/seeded-random.js";

const K = 17;

interface RoundTripSetup {
  codec: KeypointCodec;
  /** Input pixels per heatmap pixel, per axis. */
  stride: [number, number];
  keypoints: Float32Array;
}

/** A random codec configuration and joints whose Gaussians lie inside the heatmap (3σ from every border). */
function randomSetup(random: () => number, make: (options: ConstructorParameters<typeof MsraHeatmapCodec>[0]) => KeypointCodec, strides: readonly number[]): RoundTripSetup {
  const heatmap = { width: 32 + Math.floor(random() * 65), height: 32 + Math.floor(random() * 65) };
  const strideOf = strides[Math.floor(random() * strides.length)] as number;
  const input = { width: heatmap.width * strideOf, height: heatmap.height * strideOf };
  const sigma = 1 + random() * 2;
  const codec = make({ inputSize: input, heatmapSize: heatmap, numKeypoints: K, sigma, blurKernelSize: sigma < 2.5 ? 11 : 17 });
  const udp = codec.udp;
  const stride: [number, number] = udp
    ? [(input.width - 1) / (heatmap.width - 1), (input.height - 1) / (heatmap.height - 1)]
    : [input.width / heatmap.width, input.height / heatmap.height];
  const margin = 3 * sigma + 1;
  const keypoints = new Float32Array(2 * K);
  for (let j = 0; j < K; j++) {
    keypoints[2 * j] = (margin + random() * (heatmap.width - 1 - 2 * margin)) * stride[0];
    keypoints[2 * j + 1] = (margin + random() * (heatmap.height - 1 - 2 * margin)) * stride[1];
  }
  return { codec, stride, keypoints };
}

/** The worst error of encode → decode over `trials` random setups, in input pixels and in heatmap pixels. */
function worstRoundTrip(seed: number, trials: number, make: Parameters<typeof randomSetup>[1], strides: readonly number[]): { input: number; heatmap: number } {
  const random = seededRandom(seed);
  let input = 0;
  let heatmap = 0;
  for (let trial = 0; trial < trials; trial++) {
    const { codec, stride, keypoints } = randomSetup(random, make, strides);
    const { targets, weights } = codec.encode(keypoints);
    expect(Array.from(weights)).toEqual(new Array(K).fill(1));
    const decoded = codec.decode(targets);
    for (let i = 0; i < 2 * K; i++) {
      const error = Math.abs((decoded.keypoints[i] as number) - (keypoints[i] as number));
      input = Math.max(input, error);
      heatmap = Math.max(heatmap, error / (stride[i % 2] as number));
    }
  }
  return { input, heatmap };
}

describe("heatmap codecs: round trips over random joints, sizes and sigmas", () => {
  it("recovers joints within 0.25 input px with DARK (sub-pixel targets)", () => {
    const worst = worstRoundTrip(11, 60, (o) => new MsraHeatmapCodec({ ...o, refinement: "dark" }), [1, 2, 4]);
    expect(worst.input).toBeLessThan(0.25);
  });

  it("recovers joints within 0.25 input px with UDP", () => {
    const worst = worstRoundTrip(12, 60, (o) => new UdpHeatmapCodec(o), [1, 2, 4]);
    expect(worst.input).toBeLessThan(0.25);
  });

  it("recovers joints within 0.5 input px with the plain quarter-offset decoder when the heatmap has the input's resolution", () => {
    const worst = worstRoundTrip(13, 30, (o) => new MsraHeatmapCodec(o), [1]);
    expect(worst.input).toBeLessThanOrEqual(0.5);
  });

  it("recovers joints within half a heatmap pixel with the plain decoder at any stride (its targets sit on the nearest pixel)", () => {
    const worst = worstRoundTrip(14, 60, (o) => new MsraHeatmapCodec(o), [2, 4]);
    expect(worst.heatmap).toBeLessThanOrEqual(0.5 + 1e-6);
    // Rounding to the grid really costs up to that much: this is the encoding's limit, not the decoder's.
    expect(worst.heatmap).toBeGreaterThan(0.4);
  });

  it("recovers joints on the heatmap grid exactly with the plain decoder", () => {
    const codec = new MsraHeatmapCodec({ inputSize: { width: 192, height: 256 }, heatmapSize: { width: 48, height: 64 }, numKeypoints: 2, sigma: 2 });
    const keypoints = new Float32Array([40, 100, 120, 232]);
    expect(Array.from(codec.decode(codec.encode(keypoints).targets).keypoints)).toEqual([40, 100, 120, 232]);
  });
});

describe("heatmap codecs: targets and weights", () => {
  const options = { inputSize: { width: 192, height: 256 }, heatmapSize: { width: 48, height: 64 }, numKeypoints: 3, sigma: 2 };
  const planeSize = 48 * 64;

  it.each([
    ["MSRA", new MsraHeatmapCodec(options)],
    ["DARK", new MsraHeatmapCodec({ ...options, refinement: "dark" })],
    ["UDP", new UdpHeatmapCodec(options)],
  ])("%s: gives unlabelled joints and joints far outside the crop weight 0 and an empty heatmap", (_, codec) => {
    const keypoints = [96, 128, 50, 60, -200, 128];
    const { targets, weights } = codec.encode(keypoints, [2, 0, 2]);
    const heatmaps = targets[0] as Float32Array;
    expect(Array.from(weights)).toEqual([1, 0, 0]);
    // The labelled joint's Gaussian peaks near 1 (exactly 1 where it sits on a pixel).
    expect(Math.max(...heatmaps.subarray(0, planeSize))).toBeGreaterThan(0.9);
    expect(heatmaps.subarray(planeSize).every((v) => v === 0)).toBe(true);
  });

  it("keeps weight 1 for a joint just outside the crop whose Gaussian still reaches into it", () => {
    const codec = new MsraHeatmapCodec(options);
    // 2 heatmap px left of the border: within 3σ = 6 px.
    const { weights, targets } = codec.encode([-8, 128, 96, 128, 96, 128]);
    expect(weights[0]).toBe(1);
    expect((targets[0] as Float32Array)[32 * 48]).toBeCloseTo(Math.exp(-4 / 8), 6);
  });

  it("caps visibility at 1 and treats visibility below 0.5 as unlabelled", () => {
    const codec = new MsraHeatmapCodec(options);
    expect(Array.from(codec.encode([96, 128, 96, 128, 96, 128], [0.4, 0.75, 2]).weights)).toEqual([0, 0.75, 1]);
  });

  it("writes into a batch tensor at the instance's index without touching its neighbours", () => {
    const codec = new MsraHeatmapCodec(options);
    const size = 3 * planeSize;
    const batch = new Float32Array(4 * size).fill(7);
    const weights = new Float32Array(4 * 3).fill(7);
    const encoded = codec.encode([96, 128, 10, 10, 180, 250], undefined, { targets: [batch], weights, index: 2 });
    expect(encoded.targets[0]?.buffer).toBe(batch.buffer);
    expect(batch.subarray(0, 2 * size).every((v) => v === 7)).toBe(true);
    expect(batch.subarray(3 * size).every((v) => v === 7)).toBe(true);
    // Stale values in the instance's own slot are cleared.
    expect(batch.subarray(2 * size, 3 * size).some((v) => v === 7)).toBe(false);
    expect(Array.from(weights)).toEqual([7, 7, 7, 7, 7, 7, 1, 1, 1, 7, 7, 7]);
    const decoded = codec.decode([batch], 2);
    // Rounded to the heatmap grid: 10 / 4 = 2.5 → pixel 3, 250 / 4 = 62.5 → 63 (halves up, as MSRA).
    expect(Array.from(decoded.keypoints)).toEqual([96, 128, 12, 12, 180, 252]);
  });

  it("decodes into a destination at an index and scores each joint by its heatmap maximum", () => {
    const codec = new MsraHeatmapCodec(options);
    const heatmaps = codec.encode([96, 128, 40, 40, 100, 200]).targets[0] as Float32Array;
    heatmaps.subarray(planeSize, 2 * planeSize).forEach((v, i, plane) => (plane[i] = v * 0.5));
    const keypoints = new Float32Array(2 * 2 * 3);
    const scores = new Float32Array(2 * 3);
    codec.decode([heatmaps], 0, { keypoints, scores, index: 1 });
    expect(Array.from(scores)).toEqual([0, 0, 0, 1, 0.5, 1]);
    expect(Array.from(keypoints.subarray(6))).toEqual([96, 128, 40, 40, 100, 200]);
  });

  it("moves a quarter pixel toward the higher neighbour", () => {
    const codec = new MsraHeatmapCodec({ ...options, numKeypoints: 1 });
    const heatmap = new Float32Array(planeSize);
    heatmap[20 * 48 + 10] = 1;
    heatmap[20 * 48 + 11] = 0.6;
    heatmap[20 * 48 + 9] = 0.4;
    heatmap[19 * 48 + 10] = 0.7;
    heatmap[21 * 48 + 10] = 0.2;
    expect(Array.from(codec.decode([heatmap]).keypoints)).toEqual([10.25 * 4, 19.75 * 4]);
  });

  it("reports an empty heatmap at (−1, −1) heatmap pixels with score 0", () => {
    const codec = new MsraHeatmapCodec({ ...options, numKeypoints: 1, refinement: "dark" });
    const decoded = codec.decode([new Float32Array(planeSize)]);
    expect(Array.from(decoded.keypoints)).toEqual([-4, -4]);
    expect(decoded.scores[0]).toBe(0);
  });

  it("refuses NaN keypoints, NaN network output and arrays of the wrong size with a RangeError", () => {
    const codec = new UdpHeatmapCodec(options);
    expect(() => codec.encode([96, Number.NaN, 1, 1, 2, 2])).toThrow(/keypoints\[1\] must be a finite number/);
    expect(() => codec.encode([96, 128])).toThrow(RangeError);
    const output = new Float32Array(3 * planeSize);
    output[5] = Number.NaN;
    expect(() => codec.decode([output])).toThrow(/NaN/);
    expect(() => codec.decode([new Float32Array(10)])).toThrow(RangeError);
    expect(() => codec.decode([new Float32Array(3 * planeSize)], 1)).toThrow(/instance 1/);
  });

  it("refuses sizes and sigmas that make no codec", () => {
    expect(() => new MsraHeatmapCodec({ ...options, sigma: 0 })).toThrow(RangeError);
    expect(() => new MsraHeatmapCodec({ ...options, heatmapSize: { width: 0, height: 64 } })).toThrow(RangeError);
    expect(() => new MsraHeatmapCodec({ ...options, refinement: "dark", blurKernelSize: 4 })).toThrow(/odd/);
  });
});

describe("heatmap codecs: flip test", () => {
  const permutation = flipPermutation(COCO17);
  /** The same person in the horizontally mirrored crop: x → (w − 1) − x, left and right swapped. */
  function mirrored(keypoints: Float32Array, width: number): Float32Array {
    const out = new Float32Array(keypoints.length);
    for (let j = 0; j < K; j++) {
      const partner = permutation[j] as number;
      out[2 * j] = width - 1 - (keypoints[2 * partner] as number);
      out[2 * j + 1] = keypoints[2 * partner + 1] as number;
    }
    return out;
  }

  it.each([
    ["UDP, mirrored exactly without a shift", new UdpHeatmapCodec({ inputSize: { width: 192, height: 256 }, heatmapSize: { width: 48, height: 64 }, numKeypoints: K, sigma: 2 }), 0.25],
    ["MSRA DARK, with the one-pixel shift", new MsraHeatmapCodec({ inputSize: { width: 192, height: 256 }, heatmapSize: { width: 48, height: 64 }, numKeypoints: K, sigma: 2, refinement: "dark" }), 0.75],
  ])("merges the mirrored crop's output back onto the right joints: %s", (_, codec, tolerance) => {
    const random = seededRandom(5);
    const keypoints = Float32Array.from({ length: 2 * K }, (_, i) => 30 + random() * (i % 2 === 0 ? 132 : 196));
    const plain = codec.encode(keypoints).targets;
    const flipped = codec.encode(mirrored(keypoints, 192)).targets;
    const merged = codec.mergeFlipTest(plain, flipped, permutation);
    const decoded = codec.decode(merged);
    for (let i = 0; i < 2 * K; i++) expect(Math.abs((decoded.keypoints[i] as number) - (keypoints[i] as number))).toBeLessThan(tolerance);
  });
});

describe("createKeypointCodec", () => {
  it("builds the codec a manifest describes", () => {
    const base = { inputSize: { width: 192, height: 256 }, numKeypoints: K };
    expect(createKeypointCodec({ kind: "heatmap", ...base, heatmapSize: { width: 48, height: 64 }, sigma: 2 }).kind).toBe("msra-heatmap");
    const udp = createKeypointCodec({ kind: "heatmap", ...base, heatmapSize: { width: 48, height: 64 }, sigma: 2, unbiased: true });
    expect([udp.kind, udp.udp, udp.outputShape]).toEqual(["udp-heatmap", true, [[K, 64, 48]]]);
    expect(createKeypointCodec({ kind: "simcc", ...base }).targetShape).toEqual([[K, 384], [K, 512]]);
  });
});
