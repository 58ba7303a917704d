import { describe, expect, it } from "vitest";
import { keypointErrors } from "./keypoint-errors.js";
import { COCO17 } from "./keypoint-schema.js";

const K = 17;
/** A standing person: keypoint j at x = 100 + 10·(j mod 2 ? −1 : 1)·j, y = 20 + 10·j, all labelled. */
function person(imageId: number, area = 10_000) {
  const keypoints: number[] = [];
  for (let j = 0; j < K; j++) keypoints.push(100 + (j % 2 === 1 ? -1 : 1) * 3 * j, 20 + 10 * j, 2);
  return { image_id: imageId, keypoints, num_keypoints: K, area, bbox: [40, 20, 120, 170] };
}
const byName = (report: ReturnType<typeof keypointErrors>, name: string) => report.keypoints.find((k) => k.name === name);

describe("keypointErrors", () => {
  it("scores exact keypoints 1 with no misses", () => {
    const gt = person(1);
    const report = keypointErrors([gt], [{ image_id: 1, keypoints: gt.keypoints }], COCO17);
    expect([report.matched, report.unmatched]).toEqual([1, 0]);
    for (const k of report.keypoints) expect([k.labelled, k.meanOks, k.missRate, k.swapRate]).toEqual([1, 1, 0, 0]);
  });

  it("gives a keypoint its own OKS term and counts it missed under 0.5", () => {
    const gt = person(1);
    const det = [...gt.keypoints];
    // Nose (σ 0.026) 5 px off at area 10,000: exp(−25 / (2 · 10,000 · 0.052²)) = 0.6294.
    det[0] = (det[0] as number) + 5;
    // Left hip (σ 0.107) 40 px off: exp(−1600 / (2 · 10,000 · 0.214²)) = 0.1743.
    det[3 * 11 + 1] = (det[3 * 11 + 1] as number) + 40;
    const report = keypointErrors([gt], [{ image_id: 1, keypoints: det }], COCO17);
    expect(byName(report, "nose")?.meanOks).toBeCloseTo(Math.exp(-25 / (2 * 10_000 * 0.052 ** 2)), 6);
    expect(byName(report, "nose")?.missRate).toBe(0);
    expect(byName(report, "left_hip")?.meanOks).toBeCloseTo(Math.exp(-1600 / (2 * 10_000 * 0.214 ** 2)), 6);
    expect([byName(report, "left_hip")?.missRate, byName(report, "left_hip")?.swapRate]).toEqual([1, 0]);
  });

  it("tells left/right swaps from other misses", () => {
    const gts = [person(1), person(2)];
    const swapped = [...(gts[0]?.keypoints ?? [])];
    // Wrists (9, 10) exchanged: each sits at its partner's truth.
    for (const [a, b] of [[9, 10]] as const) {
      for (let c = 0; c < 2; c++) [swapped[3 * a + c], swapped[3 * b + c]] = [swapped[3 * b + c] as number, swapped[3 * a + c] as number];
    }
    const lost = [...(gts[1]?.keypoints ?? [])];
    lost[3 * 9] = (lost[3 * 9] as number) - 60; // the left wrist far off, away from the right one
    const report = keypointErrors(gts, [{ image_id: 1, keypoints: swapped }, { image_id: 2, keypoints: lost }], COCO17);
    expect([byName(report, "left_wrist")?.missRate, byName(report, "left_wrist")?.swapRate]).toEqual([1, 0.5]);
    expect([byName(report, "right_wrist")?.missRate, byName(report, "right_wrist")?.swapRate]).toEqual([0.5, 1]);
    expect(byName(report, "nose")?.missRate).toBe(0);
  });

  it("matches each person to its best detection once, counts the unmatched and skips crowds and unlabelled people", () => {
    const near = person(1);
    const far = { ...person(1), keypoints: person(1).keypoints.map((v, i) => (i % 3 === 0 ? v + 300 : v)) };
    const crowd = { ...person(1), iscrowd: 1 };
    const unlabelled = { ...person(1), keypoints: person(1).keypoints.map((v, i) => (i % 3 === 2 ? 0 : v)), num_keypoints: 0 };
    const alone = person(3);
    // One detection, exactly on `far`: it goes to `far`, `near` stays unmatched, and so does image 3's person.
    const report = keypointErrors([near, far, crowd, unlabelled, alone], [{ image_id: 1, keypoints: far.keypoints }, { image_id: 9, keypoints: near.keypoints }], COCO17);
    expect([report.matched, report.unmatched]).toEqual([1, 2]);
    expect(report.keypoints.every((k) => k.labelled === 1 && k.meanOks === 1)).toBe(true);
    expect(keypointErrors([], [], COCO17).keypoints.every((k) => k.labelled === 0 && Number.isNaN(k.meanOks))).toBe(true);
  });
});
