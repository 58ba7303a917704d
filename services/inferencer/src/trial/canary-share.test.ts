import { describe, expect, it } from "vitest";
import { inCanaryShare, streamPosition } from "./canary-share.js";

describe("canary share", () => {
  const keys = Array.from({ length: 10_000 }, (_, i) => `cam-${i}`);

  it("puts the policy's fraction of stream keys in the canary, within 2 points over 10,000 keys", () => {
    const positions = keys.map(streamPosition);
    for (const fraction of [0.05, 0.1, 0.3, 0.5]) {
      const share = positions.filter((position) => position < fraction).length / keys.length;
      expect(Math.abs(share - fraction), `fraction ${fraction}: share ${share}`).toBeLessThan(0.02);
    }
    expect(keys.every((key) => inCanaryShare(key, 1))).toBe(true);
  });

  it("decides the same way for a key every time, and a larger share keeps the streams of a smaller one", () => {
    for (const key of keys.slice(0, 200)) {
      expect(streamPosition(key)).toBe(streamPosition(key));
      expect(streamPosition(key)).toBeGreaterThanOrEqual(0);
      expect(streamPosition(key)).toBeLessThan(1);
      if (inCanaryShare(key, 0.2)) expect(inCanaryShare(key, 0.5)).toBe(true);
    }
    // Known values (the first 32 bits of SHA-256): inferencers of other builds, side by side in a rollout,
    // must split streams alike.
    expect(streamPosition("cam-1")).toBeCloseTo(0.12164452066645026, 15);
    expect(streamPosition("cam-2")).toBeCloseTo(0.7211546248290688, 15);
    expect(inCanaryShare("cam-1", 0.2)).toBe(true);
    expect(inCanaryShare("cam-2", 0.7)).toBe(false);
  });
});
