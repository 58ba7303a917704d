import { describe, expect, it } from "vitest";
import { KeypointSmoother } from "@poseloop/pose";
import { seededRandom } from "./testing/seeded-random.js";

function spread(values: number[]): number {
  const mean = values.reduce((s, v) => s + v, 0) / values.length;
  return Math.sqrt(values.reduce((s, v) => s + (v - mean) ** 2, 0) / values.length);
}

describe("KeypointSmoother", () => {
  it("reduces jitter on a noisy constant signal", () => {
    const smoother = new KeypointSmoother(2);
    const random = seededRandom(9);
    const raw: number[] = [];
    const smoothed: number[] = [];
    for (let frame = 0; frame < 300; frame++) {
      const noisy = [100 + (random() - 0.5) * 6, 200 + (random() - 0.5) * 6, 50, 60];
      const out = smoother.smooth(1, noisy, BigInt(frame) * 33_333n);
      if (frame >= 60) {
        raw.push(noisy[0] as number);
        smoothed.push(out[0] as number);
      }
    }
    expect(spread(smoothed)).toBeLessThan(spread(raw) / 3);
    expect(Math.abs(smoothed.reduce((s, v) => s + v, 0) / smoothed.length - 100)).toBeLessThan(0.5);
  });

  it("returns the first frame unchanged and keeps separate state per track", () => {
    const smoother = new KeypointSmoother(1);
    expect(Array.from(smoother.smooth(1, [10, 20], 0))).toEqual([10, 20]);
    expect(Array.from(smoother.smooth(2, [500, 600], 0))).toEqual([500, 600]);
    const next = smoother.smooth(1, [20, 30], 33_333);
    expect(next[0]).toBeGreaterThan(10);
    expect(next[0]).toBeLessThan(20);
    expect(smoother.size).toBe(2);
    smoother.retain([2]);
    expect(smoother.size).toBe(1);
    expect(Array.from(smoother.smooth(1, [20, 30], 66_666))).toEqual([20, 30]);
  });

  it("refuses settings the filter cannot use and NaN keypoints", () => {
    expect(() => new KeypointSmoother(17, { minCutoff: 0 })).toThrow(RangeError);
    expect(() => new KeypointSmoother(1).smooth(1, [Number.NaN, 1], 0)).toThrow(RangeError);
  });
});
