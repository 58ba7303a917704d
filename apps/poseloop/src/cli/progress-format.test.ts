import { create } from "@bufbuild/protobuf";
import { JobEventSchema, JobProgressSchema, JobState } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { describe, expect, it } from "vitest";
import { formatEvent, formatJobSummary, formatTable } from "./job-format.js";
import { formatDuration, formatLearningRate, formatLoss, formatProgressBar, formatProgressLine } from "./progress-format.js";
import { fakeJob } from "@poseloop/client/testing";

const progress = create(JobProgressSchema, {
  epoch: 2,
  endEpoch: 20,
  step: 920n,
  stepInEpoch: 120,
  stepsPerEpoch: 400,
  loss: 0.00123,
  lr: 0.001,
  samplesPerSecond: 312.4,
  etaSeconds: 724,
});

describe("progress formatting", () => {
  it("writes durations with two units at most", () => {
    expect([0, 45, 60, 724, 3600, 3725, 86_400 + 5 * 3600].map(formatDuration)).toEqual(["0s", "45s", "1m00s", "12m04s", "1h00m", "1h02m", "1d05h"]);
    expect(formatDuration(Number.NaN)).toBe("?");
  });

  it("writes small losses and learning rates with exponents", () => {
    expect(formatLoss(0.00123)).toBe("1.230e-3");
    expect(formatLoss(1.5)).toBe("1.500");
    expect(formatLearningRate(0.001)).toBe("1.00e-3");
    expect(formatLearningRate(0.1)).toBe("0.100");
  });

  it("prints epoch from 1, steps within the epoch, loss, lr, samples/s and ETA on a plain line", () => {
    expect(formatProgressLine(progress)).toBe("epoch 3/20  step 120/400  loss 1.230e-3  lr 1.00e-3  312 samples/s  ETA 12m04s");
  });

  it("fits the bar to the terminal and shrinks it before cutting numbers", () => {
    const wide = formatProgressBar(progress, 120);
    expect(wide).toMatch(/^epoch 3\/20 \[#+-+\] 120\/400 {2}loss 1\.230e-3 {2}lr 1\.00e-3 {2}312 samples\/s {2}ETA 12m04s$/);
    expect(wide.length).toBeLessThan(120);
    // 120 of 400 steps: 30 % of the bar filled.
    expect(wide.match(/#/g)).toHaveLength(9);
    const narrow = formatProgressBar(progress, 60);
    expect(narrow).not.toContain("[");
    expect(narrow).toContain("ETA 12m04s");
  });

  it("describes validation, checkpoints, publications and failures in one line each", () => {
    const event = (init: Parameters<typeof create<typeof JobEventSchema>>[1]) => formatEvent(create(JobEventSchema, init));
    expect(event({ event: { case: "validation", value: { epoch: 3, isBest: true, metrics: { ap: 0.7123, ap50: 0.9, ap75: 0.75, ar: 0.76 } } } })).toBe(
      "validation (epoch 3): AP 0.712 (AP50 0.900, AP75 0.750, AR 0.760)  (new best)",
    );
    expect(event({ event: { case: "checkpointSaved", value: { checkpoint: { checkpointId: "e0003-s001200", reason: 1, isBest: true } } } })).toBe(
      "checkpoint e0003-s001200 saved (epoch end, best)",
    );
    expect(
      event({ event: { case: "published", value: { promoted: true, manifest: { model: { name: "demo", version: "v3" }, precision: 3, architecture: "lite", metrics: { ap: 0.705 } } } } }),
    ).toBe("published demo@v3 (int8, lite, AP 0.705): serving now");
    expect(event({ event: { case: "stateChanged", value: { to: JobState.FAILED, error: { code: 13, message: "loss is NaN" } } } })).toBe("job FAILED (loss is NaN)");
    expect(event({ event: { case: "progress", value: {} } })).toBeUndefined();
  });

  it("summarizes a finished job with its best AP and publications", () => {
    const job = fakeJob({
      jobId: "job-1",
      state: JobState.SUCCEEDED,
      startedAt: { seconds: 1000n },
      finishedAt: { seconds: 1750n },
      bestMetrics: { ap: 0.712, ap50: 0.9, ap75: 0.75, ar: 0.76, dataset: "synthetic-demo/val" },
      bestEpoch: 18,
      published: [{ name: "demo", version: "v3" }],
    });
    expect(formatJobSummary(job)).toEqual([
      "job job-1 SUCCEEDED after 12m30s",
      "  best validation AP 0.712 (AP50 0.900, AP75 0.750, AR 0.760) on synthetic-demo/val (epoch 18)",
      "  published demo@v3",
    ]);
  });

  it("aligns table columns", () => {
    expect(formatTable(["A", "BB"], [["xxx", "1"], ["y", "22"]])).toEqual(["A    BB", "xxx  1", "y    22"]);
  });
});
