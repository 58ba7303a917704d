import { describe, expect, it } from "vitest";
import { detectionIou, nonMaximumSuppression } from "./person-detection.js";

const box = (x1: number, y1: number, x2: number, y2: number, score: number) => ({ x1, y1, x2, y2, score });

describe("nonMaximumSuppression", () => {
  it("keeps the best of overlapping boxes and every separate one, best first", () => {
    const boxes = [box(0, 0, 10, 10, 0.6), box(1, 1, 11, 11, 0.9), box(50, 50, 60, 60, 0.7)];
    expect(nonMaximumSuppression(boxes, 0.5)).toEqual([boxes[1], boxes[2]]);
  });

  it("keeps overlapping boxes whose IoU is at or under the threshold", () => {
    const a = box(0, 0, 10, 10, 0.9);
    const b = box(5, 0, 15, 10, 0.8); // IoU 1/3
    expect(nonMaximumSuppression([a, b], 0.4)).toHaveLength(2);
    expect(nonMaximumSuppression([a, b], 0.3)).toHaveLength(1);
  });

  it("stops at maxDetections", () => {
    const boxes = Array.from({ length: 10 }, (_, i) => box(i * 20, 0, i * 20 + 10, 10, i / 10));
    expect(nonMaximumSuppression(boxes, 0.5, 3).map((b) => b.score)).toEqual([0.9, 0.8, 0.7]);
  });

  it("gives 0 IoU for disjoint or empty boxes", () => {
    expect(detectionIou(box(0, 0, 1, 1, 1), box(2, 2, 3, 3, 1))).toBe(0);
    expect(detectionIou(box(0, 0, 0, 0, 1), box(0, 0, 0, 0, 1))).toBe(0);
  });
});
