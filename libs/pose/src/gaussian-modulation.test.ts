import { describe, expect, it } from "vitest";
import { MsraHeatmapCodec, UdpHeatmapCodec } from "@poseloop/pose";
import { blurredNeighbourhood, gaussianBlurKernel, modulateHeatmap, NEIGHBOURHOOD_SIDE, neighbourhoodOf } from "./gaussian-modulation.js";
import { heatmapMaximum } from "./heatmap-maximum.js";
import { refineDark, refineDarkUdp } from "./heatmap-refinement.js";
import { seededRandom } from "./testing/seeded-random.js";

const W = 48;
const H = 64;

/** Two blobs and noise, scaled: a realistic network output, and with a small scale a low-confidence one. */
function noisyHeatmap(random: () => number, scale: number): Float32Array {
  const plane = new Float32Array(W * H);
  const blobs = [0, 1].map(() => ({ x: 4 + random() * (W - 8), y: 4 + random() * (H - 8), s: 1.5 + random() * 2, a: 0.3 + random() * 0.7 }));
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      let v = (random() - 0.3) * 0.02;
      for (const b of blobs) v += b.a * Math.exp(-((x - b.x) ** 2 + (y - b.y) ** 2) / (2 * b.s * b.s));
      plane[y * W + x] = v * scale;
    }
  }
  return plane;
}

describe("gaussianBlurKernel", () => {
  it("uses OpenCV's fixed small kernels and sampled Gaussians of sigma 0.3·((k − 1)/2 − 1) + 0.8 above 7", () => {
    expect(Array.from(gaussianBlurKernel(3))).toEqual([0.25, 0.5, 0.25]);
    const k11 = gaussianBlurKernel(11);
    expect(k11.reduce((s, v) => s + v, 0)).toBeCloseTo(1, 14);
    expect((k11[5] as number) / (k11[6] as number)).toBeCloseTo(Math.exp(1 / 8), 12);
  });
});

describe("DARK modulation", () => {
  it("keeps the plane's maximum after blurring", () => {
    const plane = noisyHeatmap(seededRandom(1), 1);
    const out = new Float64Array(W * H);
    modulateHeatmap(plane, 0, W, H, gaussianBlurKernel(11), out, new Float64Array(W * H));
    expect(Math.max(...out)).toBeCloseTo(Math.max(...plane), 6);
  });

  it("blurs a neighbourhood to the same values as the whole plane, up to the rescale", () => {
    const plane = noisyHeatmap(seededRandom(2), 1);
    const kernel = gaussianBlurKernel(11);
    const full = new Float64Array(W * H);
    modulateHeatmap(plane, 0, W, H, kernel, full, new Float64Array(W * H));
    for (const [x, y] of [[20, 30], [0, 0], [47, 63], [1, 62]] as const) {
      const local = new Float64Array(NEIGHBOURHOOD_SIDE ** 2);
      const fromFull = new Float64Array(NEIGHBOURHOOD_SIDE ** 2);
      blurredNeighbourhood(plane, 0, W, H, kernel, x, y, local);
      neighbourhoodOf(full, W, H, x, y, fromFull);
      // `full` is rescaled by one factor for the whole plane: the ratio to the centre is the same.
      const center = (NEIGHBOURHOOD_SIDE ** 2 - 1) / 2;
      local.forEach((v, i) => expect(v / (local[center] as number)).toBeCloseTo((fromFull[i] as number) / (fromFull[center] as number), 10));
    }
  });

  it.each([1, 0.02, 0.002, 0.0012, 0.0005, 3e-10])("decodes exactly as the whole-plane modulation does (heatmap scale %s)", (scale) => {
    const options = { inputSize: { width: 192, height: 256 }, heatmapSize: { width: W, height: H }, numKeypoints: 1, sigma: 2 };
    const dark = new MsraHeatmapCodec({ ...options, refinement: "dark" });
    const udp = new UdpHeatmapCodec(options);
    const random = seededRandom(Math.round(-Math.log(scale) * 100));
    const kernel = gaussianBlurKernel(11);
    for (let trial = 0; trial < 20; trial++) {
      const plane = noisyHeatmap(random, scale);
      const maximum = new Float64Array(3);
      heatmapMaximum(plane, 0, W, H, maximum);
      const [x, y] = [maximum[0] as number, maximum[1] as number];
      const full = new Float64Array(W * H);
      modulateHeatmap(plane, 0, W, H, kernel, full, new Float64Array(W * H));
      const block = new Float64Array(NEIGHBOURHOOD_SIDE ** 2);
      neighbourhoodOf(full, W, H, x, y, block);
      const expectedDark = new Float64Array(2);
      refineDark(block, W, H, x, y, expectedDark);
      const expectedUdp = new Float64Array(2);
      refineDarkUdp(block, x, y, expectedUdp);
      const gotDark = dark.decode([plane]).keypoints;
      const gotUdp = udp.decode([plane]).keypoints;
      expect(gotDark[0]).toBeCloseTo((expectedDark[0] as number) * 4, 4);
      expect(gotDark[1]).toBeCloseTo((expectedDark[1] as number) * 4, 4);
      expect(gotUdp[0]).toBeCloseTo(((expectedUdp[0] as number) * 191) / 47, 4);
      expect(gotUdp[1]).toBeCloseTo(((expectedUdp[1] as number) * 255) / 63, 4);
    }
  });
});
