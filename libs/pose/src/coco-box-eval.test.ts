import { describe, expect, it } from "vitest";
import { COCO_RECALL_THRESHOLDS, cocoBoxIou, evaluateBoxes, type CocoBoxDetection, type CocoBoxGroundTruth } from "@poseloop/pose";



const gt = (id: number, image: number, bbox: number[], extra: Partial<CocoBoxGroundTruth> = {}): CocoBoxGroundTruth => ({ id, image_id: image, bbox, ...extra });
const dt = (image: number, bbox: number[], score: number): CocoBoxDetection => ({ image_id: image, bbox, score });

describe("cocoBoxIou", () => {
  it("is maskUtils.iou's: intersection over union, over the detection's area for a crowd", () => {
    expect(cocoBoxIou([0, 0, 10, 10], [5, 0, 10, 10])).toBeCloseTo(50 / 150, 15);
    expect(cocoBoxIou([0, 0, 10, 10], [5, 0, 100, 100], true)).toBe(0.5);
    expect(cocoBoxIou([0, 0, 10, 10], [10, 0, 10, 10])).toBe(0);
  });
});

describe("evaluateBoxes: hand-made cases", () => {
  it("gives 1 for perfect boxes, and −1 for the area ranges without people", () => {
    const gts = [gt(1, 1, [10, 10, 100, 200]), gt(2, 2, [0, 0, 120, 100])];
    const { stats } = evaluateBoxes(gts, gts.map((g) => dt(g.image_id, [...(g.bbox as number[])], 0.9)));
    expect(stats.ap).toBeCloseTo(1, 12);
    expect(stats.apLarge).toBeCloseTo(1, 12);
    expect([stats.apSmall, stats.apMedium, stats.arSmall, stats.arMedium]).toEqual([-1, -1, -1, -1]);
    expect([stats.ar1, stats.ar10, stats.ar, stats.ar50, stats.ar75]).toEqual([1, 1, 1, 1, 1]);
  });

  it("counts a box by its IoU at each threshold: IoU 0.6 is a hit at .50, .55 and .60 (a tie with the threshold counts)", () => {
    // Detection [0, 0, 100, 60] against GT [0, 0, 100, 100]: IoU 0.6.
    const { stats, recall } = evaluateBoxes([gt(1, 1, [0, 0, 100, 100])], [dt(1, [0, 0, 100, 60], 0.8)]);
    expect(stats.ap50).toBeCloseTo(1, 12);
    expect(stats.ap75).toBe(0);
    // Three of ten thresholds hit, each with precision 1 (ε aside) at every recall point.
    expect(stats.ap).toBeCloseTo(0.3, 12);
    expect(stats.ar).toBeCloseTo(0.3, 15);
    expect(recall.length).toBe(10 * 1 * 4 * 3);
  });

  it("ranks detections by score over the dataset: a false positive above a hit halves its precision", () => {
    const gts = [gt(1, 1, [0, 0, 50, 50]), gt(2, 2, [0, 0, 50, 50])];
    const dts = [dt(1, [0, 0, 50, 50], 0.5), dt(2, [200, 200, 50, 50], 0.9), dt(2, [0, 0, 50, 50], 0.3)];
    const { stats } = evaluateBoxes(gts, dts);
    // Sorted: FP (0.9), TP (0.5), TP (0.3): precisions 0, 1/2, 2/3 at recalls 0, 1/2, 1; the envelope makes
    // every recall point 2/3 (ε aside): AP = 2/3 at every IoU threshold.
    expect(stats.ap).toBeCloseTo(2 / 3, 12);
    // With one detection per image (maxDets 1), image 2 keeps only its false positive: recall 1/2.
    expect(stats.ar1).toBe(0.5);
    expect(stats.ar10).toBe(1);
  });

  it("ignores crowd regions: detections inside one are neither hits nor false positives", () => {
    const gts = [gt(1, 1, [0, 0, 40, 40]), gt(2, 1, [100, 0, 200, 200], { iscrowd: 1 })];
    const dts = [dt(1, [0, 0, 40, 40], 0.9), dt(1, [110, 10, 50, 50], 0.95), dt(1, [200, 50, 50, 50], 0.99)];
    const { stats } = evaluateBoxes(gts, dts);
    expect(stats.ap).toBeCloseTo(1, 12);
    expect(stats.ar).toBe(1);
    // Without the crowd flag the region is a person nobody found, and the two boxes in it are false positives.
    const plain = evaluateBoxes([gts[0]!, gt(2, 1, [100, 0, 200, 200])], dts).stats;
    expect(plain.ap).toBeLessThan(0.5);
  });

  it("splits by area: a GT's own area picks its range, an unmatched detection outside it is ignored", () => {
    // Small (area 20² = 400), medium (50²) and large (120²) people, each found; one large false positive.
    const gts = [gt(1, 1, [0, 0, 20, 20]), gt(2, 1, [100, 0, 50, 50]), gt(3, 2, [0, 0, 120, 120])];
    const dts = [dt(1, [0, 0, 20, 20], 0.9), dt(1, [100, 0, 50, 50], 0.8), dt(2, [0, 0, 120, 120], 0.7), dt(2, [300, 300, 150, 150], 0.95)];
    const { stats } = evaluateBoxes(gts, dts);
    expect(stats.apSmall).toBeCloseTo(1, 12);
    expect(stats.apMedium).toBeCloseTo(1, 12);
    // Among large boxes the false positive ranks first: precision 1/2 at recall 1.
    expect(stats.apLarge).toBeCloseTo(0.5, 12);
    // The annotation's area, not the box's, decides: a 50x50 box annotated with area 900 is small.
    const masked = evaluateBoxes([gt(1, 1, [0, 0, 50, 50], { area: 900 })], [dt(1, [0, 0, 50, 50], 0.9)]).stats;
    expect(masked.apSmall).toBeCloseTo(1, 12);
    expect(masked.apMedium).toBe(-1);
  });

  it("keeps 100 detections per image and refuses detections on images outside the evaluated ones", () => {
    const dts = Array.from({ length: 120 }, (_, i) => dt(1, [1000 + i * 10, 0, 5, 5], 0.5 + i / 1000));
    // The hit scores lowest: past the 100 best it is never seen.
    dts.push(dt(1, [0, 0, 10, 10], 0.01));
    const result = evaluateBoxes([gt(1, 1, [0, 0, 10, 10])], dts);
    expect(result.numDetections).toBe(100);
    expect(result.stats.ar).toBe(0);
    expect(() => evaluateBoxes([], [dt(5, [0, 0, 1, 1], 1)], [1])).toThrow(RangeError);
    expect(COCO_RECALL_THRESHOLDS.length).toBe(101);
  });
});
