import { describe, expect, it } from "vitest";
import { UsageError } from "./error-report.js";
import { trainOverrides } from "./train-overrides.js";

describe("trainOverrides", () => {
  it("maps each shorthand flag to its experiment-file key, keeping the value as typed", () => {
    expect(
      trainOverrides({ flags: { lr: "5e-4", "batch-size": "16", "grad-accum": "4", "clip-grad": "5.0", epochs: "20" }, sets: [] }),
    ).toEqual({
      "TRAIN.LR": "5e-4",
      "TRAIN.BATCH_SIZE_PER_GPU": "16",
      "TRAIN.GRAD_ACCUM_STEPS": "4",
      "TRAIN.CLIP_GRAD": "5.0",
      "TRAIN.END_EPOCH": "20",
    });
  });

  it("adds --set pairs as given, splitting at the first '='", () => {
    expect(trainOverrides({ flags: {}, sets: ["TRAIN.OPTIMIZER=adamw", "TRAIN.LR_STEP=[90, 120]", "DATASET.ROOT=a=b"] })).toEqual({
      "TRAIN.OPTIMIZER": "adamw",
      "TRAIN.LR_STEP": "[90, 120]",
      "DATASET.ROOT": "a=b",
    });
  });

  it.each([
    [{ lr: "0" }, "--lr must be greater than 0"],
    [{ lr: "fast" }, "--lr must be a number"],
    [{ "batch-size": "2.5" }, "--batch-size must be an integer"],
    [{ "grad-accum": "0" }, "--grad-accum must be at least 1"],
    [{ "clip-grad": "-1" }, "--clip-grad must be at least 0"],
    [{ epochs: "ten" }, "--epochs must be an integer"],
  ])("refuses %j as a usage error", (flags, message) => {
    expect(() => trainOverrides({ flags, sets: [] })).toThrow(UsageError);
    expect(() => trainOverrides({ flags, sets: [] })).toThrow(message);
  });

  it("refuses a key given twice instead of letting one silently win", () => {
    expect(() => trainOverrides({ flags: { lr: "0.001" }, sets: ["TRAIN.LR=0.01"] })).toThrow("TRAIN.LR is given twice (--lr and --set TRAIN.LR)");
    expect(() => trainOverrides({ flags: {}, sets: ["A=1", "A=2"] })).toThrow("A is given twice");
  });

  it("refuses --set without KEY=VALUE", () => {
    expect(() => trainOverrides({ flags: {}, sets: ["TRAIN.LR"] })).toThrow('--set takes KEY=VALUE, got "TRAIN.LR"');
    expect(() => trainOverrides({ flags: {}, sets: ["=1"] })).toThrow(UsageError);
  });
});
