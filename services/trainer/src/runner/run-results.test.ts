import { describe, expect, it } from "vitest";
import { RESULTS_CSV_COLUMNS, RunResults, type RunResultsState } from "./run-results.js";

const validation = { ap: 0.5, ap50: 0.8, ap75: 0.45, apMedium: -1, apLarge: 0.5, ar: 0.6, ar50: 0.85, ar75: 0.55, seconds: 1.25 };

/** Two epochs of two chunks each (the second epoch validated), optionally checkpointed mid-epoch 2 and resumed. */
function run(resumeAt?: "mid-epoch-2"): RunResults {
  let results = new RunResults();
  results.recordChunk({ step: 2, epoch: 1, loss: 0.004, lr: 0.001, batches: 2, samples: 16, seconds: 1 });
  results.recordChunk({ step: 4, epoch: 1, loss: 0.002, lr: 0.001, batches: 2, samples: 16, seconds: 1 });
  results.endEpoch(1, 4);
  results.recordChunk({ step: 6, epoch: 2, loss: 0.0015, lr: 0.0001, batches: 2, samples: 16, seconds: 2 });
  // A checkpoint's header is JSON: the state must come back the same through it.
  if (resumeAt === "mid-epoch-2") results = new RunResults(JSON.parse(JSON.stringify(results.state())) as RunResultsState);
  results.recordChunk({ step: 7, epoch: 2, loss: 0.0012, lr: 0.0001, batches: 1, samples: 8, seconds: 1 });
  results.endEpoch(2, 7);
  results.recordValidation(2, validation, [{ name: "nose", labelled: 10, missRate: 0.2, swapRate: 0 }]);
  return results;
}

describe("RunResults", () => {
  it("renders a header and one row per epoch, AP cells empty where an epoch was not validated", () => {
    const lines = run().csv().trimEnd().split("\n");
    expect(lines[0]).toBe(RESULTS_CSV_COLUMNS.join(","));
    expect(lines).toHaveLength(3);
    const [first, second] = lines.slice(1).map((line) => line.split(","));
    const cell = (row: string[] | undefined, column: (typeof RESULTS_CSV_COLUMNS)[number]) => row?.[RESULTS_CSV_COLUMNS.indexOf(column)];
    expect(cell(first, "epoch")).toBe("1");
    expect(cell(first, "train_loss")).toBe("0.003");
    expect(cell(first, "lr")).toBe("0.001");
    expect(cell(first, "ap")).toBe("");
    expect(cell(first, "samples_per_s")).toBe("16.0");
    // Batch-weighted mean: (0.0015·2 + 0.0012·1) / 3.
    expect(cell(second, "train_loss")).toBe("0.0014");
    expect(cell(second, "step")).toBe("7");
    expect(cell(second, "ap")).toBe("0.5000");
    expect(cell(second, "ap_medium")).toBe("-1.0000");
    expect(cell(second, "val_s")).toBe("1.25");
  });

  it("gives a resumed run the same results as an uninterrupted one", () => {
    const whole = run();
    const resumed = run("mid-epoch-2");
    expect(resumed.csv()).toBe(whole.csv());
    expect(resumed.steps).toEqual(whole.steps);
    expect(resumed.keypoints).toEqual(whole.keypoints);
  });

  it("keeps a point per chunk and the per-keypoint misses of the last validation", () => {
    const results = run();
    expect(results.steps.map((s) => s.step)).toEqual([2, 4, 6, 7]);
    expect(results.keypoints?.epoch).toBe(2);
    expect(results.keypoints?.keypoints[0]?.missRate).toBe(0.2);
  });

  it("writes a non-finite loss as nan and reads one back from JSON null", () => {
    const results = new RunResults();
    results.recordChunk({ step: 1, epoch: 1, loss: Number.NaN, lr: 0.01, batches: 1, samples: 4, seconds: 1 });
    results.endEpoch(1, 1);
    const restored = new RunResults(JSON.parse(JSON.stringify(results.state())) as RunResultsState);
    expect(restored.csv().split("\n")[1]?.split(",")[2]).toBe("nan");
    expect(Number.isNaN(restored.steps[0]?.loss)).toBe(true);
  });
});
