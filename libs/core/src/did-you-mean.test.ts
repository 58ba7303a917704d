import { describe, expect, it } from "vitest";
import { didYouMean, editDistance } from "./did-you-mean.js";

describe("didYouMean", () => {
  it("suggests the closest candidate for a typo, transpositions included", () => {
    expect(didYouMean("trian", ["train", "jobs", "watch"])).toBe("train");
    expect(didYouMean("--epcohs", ["--epochs", "--lr", "--batch-size"])).toBe("--epochs");
    expect(didYouMean("POSELOOP_TRAINER_ADR", ["POSELOOP_TRAINER_ADDR", "POSELOOP_INFERENCER_ADDR"])).toBe("POSELOOP_TRAINER_ADDR");
  });

  it("suggests nothing for a different word", () => {
    expect(didYouMean("deploy", ["train", "jobs", "watch"])).toBeUndefined();
    expect(didYouMean("x", ["train"])).toBeUndefined();
  });

  it("measures edits", () => {
    expect(editDistance("kitten", "sitting")).toBe(3);
    expect(editDistance("ab", "ba")).toBe(1);
    expect(editDistance("", "abc")).toBe(3);
  });
});
