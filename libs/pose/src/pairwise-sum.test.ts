import { describe, expect, it } from "vitest";
import { pairwiseSum } from "./pairwise-sum.js";

describe("pairwiseSum", () => {
  // Values printed by numpy 2.4's np.sum for the same arrays; a left-to-right sum differs in the last bits.
  it("adds in numpy's order", () => {
    const tenths = new Array<number>(10).fill(0.1);
    expect(pairwiseSum(tenths)).toBe(1.0);
    expect(tenths.reduce((s, v) => s + v, 0)).toBe(0.9999999999999999);
    const harmonic = Array.from({ length: 300 }, (_, i) => 1 / (i + 1));
    expect(pairwiseSum(harmonic)).toBe(6.282663880299504);
  });

  it("sums a range of an array", () => {
    expect(pairwiseSum([5, 1, 2, 3, 5], 1, 3)).toBe(6);
    expect(pairwiseSum([0.5, 0.25])).toBe(0.75);
  });
});
