import type { Affine2D } from "@poseloop/pose";
import { composeAffine, invertAffine } from "@poseloop/pose";
import { AppError, Code } from "@poseloop/core";
import { describe, expect, it } from "vitest";
import type { RgbImage } from "./rgb-image.js";
import { warpToTensor, type TensorNormalization } from "./warp-to-tensor.js";

const normalization: TensorNormalization = { mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375], channelOrder: "RGB" };

function noiseImage(width: number, height: number, seed = 1): RgbImage {
  let state = seed;
  const data = Uint8Array.from({ length: width * height * 3 }, () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state >>> 24;
  });
  return { width, height, data };
}

/** Bilinear sampling written the obvious way, one pixel and channel at a time (zero outside the image). */
function referenceWarp(image: RgbImage, m: Affine2D, w: number, h: number, norm: TensorNormalization): Float32Array {
  const out = new Float32Array(3 * w * h);
  const pixel = (x: number, y: number, c: number): number =>
    x < 0 || y < 0 || x >= image.width || y >= image.height ? 0 : image.data[(y * image.width + x) * 3 + c]!;
  for (let c = 0; c < 3; c++) {
    const source = norm.channelOrder === "BGR" ? 2 - c : c;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const sx = m[0] * x + m[1] * y + m[2];
        const sy = m[3] * x + m[4] * y + m[5];
        const x0 = Math.floor(sx);
        const y0 = Math.floor(sy);
        const fx = sx - x0;
        const fy = sy - y0;
        const v =
          (1 - fx) * (1 - fy) * pixel(x0, y0, source) +
          fx * (1 - fy) * pixel(x0 + 1, y0, source) +
          (1 - fx) * fy * pixel(x0, y0 + 1, source) +
          fx * fy * pixel(x0 + 1, y0 + 1, source);
        out[c * w * h + y * w + x] = (v - norm.mean[source]!) / norm.std[source]!;
      }
    }
  }
  return out;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

/** The crop map of a top-down pose model: person centre, scale (source pixels per output pixel), rotation. */
function cropToSource(cx: number, cy: number, scale: number, degrees: number, w: number, h: number): Affine2D {
  const r = (degrees * Math.PI) / 180;
  const cos = Math.cos(r) * scale;
  const sin = Math.sin(r) * scale;
  // source = R·S·(out − outCentre) + centre
  return [cos, -sin, cx - cos * (w / 2) + sin * (h / 2), sin, cos, cy - sin * (w / 2) - cos * (h / 2)];
}

describe("warpToTensor", () => {
  const image = noiseImage(97, 61);

  it.each([
    ["rotation, scale and translation", cropToSource(48.3, 30.7, 0.37, 33, 40, 56)],
    ["a crop reaching past every border", cropToSource(10, 55, 1.9, -120, 64, 48)],
    ["an upscaling crop", cropToSource(70.25, 12.5, 0.11, 7, 32, 32)],
    ["a crop wholly outside", cropToSource(-500, -500, 1, 0, 8, 8)],
  ])("matches the reference bilinear warp for %s", (_name, m) => {
    const w = 40;
    const h = 56;
    for (const channelOrder of ["RGB", "BGR"] as const) {
      const norm = { ...normalization, channelOrder };
      const out = new Float32Array(3 * w * h);
      warpToTensor(image, m, w, h, norm, out);
      expect(maxAbsDiff(out, referenceWarp(image, m, w, h, norm))).toBeLessThan(1e-4);
    }
  });

  it("reproduces the normalized pixels for an identity crop, and writes only its own slot", () => {
    const w = image.width;
    const h = image.height;
    const plane = w * h;
    const out = new Float32Array(2 + 3 * plane + 2).fill(42);
    warpToTensor(image, [1, 0, 0, 0, 1, 0], w, h, normalization, out, 2);
    expect([out[0], out[1], out[out.length - 2], out[out.length - 1]]).toEqual([42, 42, 42, 42]);
    let worst = 0;
    let bytesOff = 0;
    for (let p = 0; p < plane; p++) {
      for (let c = 0; c < 3; c++) {
        const value = out[2 + c * plane + p]!;
        const byte = image.data[p * 3 + c]!;
        worst = Math.max(worst, Math.abs(value - (byte - normalization.mean[c]!) / normalization.std[c]!));
        // Undoing the normalization gives the byte back exactly.
        if (Math.round(value * normalization.std[c]! + normalization.mean[c]!) !== byte) bytesOff++;
      }
    }
    expect(worst).toBeLessThan(1e-6);
    expect(bytesOff).toBe(0);
  });

  it("treats the outside as 0 before normalization, and flips through the affine", () => {
    const tiny: RgbImage = { width: 2, height: 1, data: Uint8Array.from([10, 20, 30, 40, 50, 60]) };
    const plain: TensorNormalization = { mean: [0, 0, 0], std: [1, 1, 1], channelOrder: "RGB" };
    const out = new Float32Array(3 * 4);
    // Output columns 0..3 sample source x = -1, 0, 1, 2.
    warpToTensor(tiny, [1, 0, -1, 0, 1, 0], 4, 1, plain, out);
    expect([...out.subarray(0, 4)]).toEqual([0, 10, 40, 0]);
    const shifted = new Float32Array(3 * 4);
    warpToTensor(tiny, [1, 0, -0.5, 0, 1, 0], 4, 1, plain, shifted);
    expect([...shifted.subarray(0, 4)]).toEqual([5, 25, 20, 0]);

    const flip: Affine2D = [-1, 0, tiny.width - 1, 0, 1, 0];
    const flipped = new Float32Array(3 * 2);
    warpToTensor(tiny, composeAffine(flip, [1, 0, 0, 0, 1, 0]), 2, 1, plain, flipped);
    expect([...flipped]).toEqual([40, 10, 50, 20, 60, 30]);
  });

  it("agrees with a crop built from a forward affine and invertAffine", () => {
    const forward: Affine2D = [2, 0.3, -20, -0.3, 2, -10];
    const out = new Float32Array(3 * 50 * 30);
    warpToTensor(image, invertAffine(forward), 50, 30, normalization, out);
    expect(maxAbsDiff(out, referenceWarp(image, invertAffine(forward), 50, 30, normalization))).toBeLessThan(1e-4);
  });

  it("rejects an output that does not fit, and bad sizes", () => {
    const run = (fn: () => void): unknown => {
      try {
        fn();
        return undefined;
      } catch (error) {
        return error;
      }
    };
    const small = new Float32Array(10);
    for (const error of [
      run(() => warpToTensor(image, [1, 0, 0, 0, 1, 0], 4, 4, normalization, small)),
      run(() => warpToTensor(image, [1, 0, 0, 0, 1, 0], 0, 4, normalization, small)),
      run(() => warpToTensor(image, [1, 0, NaN, 0, 1, 0], 1, 1, normalization, small)),
      run(() => warpToTensor(image, [1, 0, 0, 0, 1, 0], 1, 1, { ...normalization, std: [1, 0, 1] }, small)),
    ]) {
      expect(AppError.is(error, Code.INVALID_ARGUMENT)).toBe(true);
    }
  });
});
