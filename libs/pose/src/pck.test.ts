import { describe, expect, it } from "vitest";
import { pckAccuracy, PckMetric } from "@poseloop/pose";

describe("pckAccuracy", () => {
  const groundTruth = [10, 10, 2, 50, 50, 2, 90, 90, 0];
  const bbox = [0, 0, 100, 80];

  it("counts keypoints within threshold × max(box w, box h) of the truth, per keypoint type", () => {
    // Normalised by 100: errors 0.03 (hit), 0.06 (miss); the third is unlabelled.
    const result = pckAccuracy([{ predicted: [13, 10, 50, 56, 0, 0], groundTruth, bbox }]);
    expect(Array.from(result.perKeypoint)).toEqual([1, 0, -1]);
    expect(result.pck).toBe(0.5);
    expect(result.count).toBe(2);
  });

  it("accepts COCO's [x, y, score] layout and a custom threshold", () => {
    expect(pckAccuracy([{ predicted: [13, 10, 0.9, 50, 56, 0.9, 0, 0, 0.1], groundTruth, bbox }], { threshold: 0.1 }).pck).toBe(1);
  });

  it("averages per keypoint type over all persons, the same fed in batches", () => {
    const instances = [
      { predicted: [10, 10, 50, 50, 0, 0], groundTruth, bbox },
      { predicted: [30, 10, 50, 50, 0, 0], groundTruth, bbox },
      { predicted: [10, 10, 90, 50, 0, 0], groundTruth, bbox },
    ];
    const whole = pckAccuracy(instances);
    expect(Array.from(whole.perKeypoint)).toEqual([2 / 3, 2 / 3, -1]);
    const metric = new PckMetric();
    metric.add(instances.slice(0, 1));
    metric.add(instances.slice(1));
    expect(metric.compute()).toEqual(whole);
  });

  it("skips persons whose box has no size and refuses NaN", () => {
    expect(pckAccuracy([{ predicted: [10, 10, 50, 50, 0, 0], groundTruth, bbox: [0, 0, 0, 0] }]).count).toBe(0);
    expect(() => pckAccuracy([{ predicted: [Number.NaN, 10, 50, 50, 0, 0], groundTruth, bbox }])).toThrow(RangeError);
  });
});
