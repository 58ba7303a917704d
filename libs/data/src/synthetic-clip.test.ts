import { describe, expect, it } from "vitest";
import { colourHistogram, histogramDistance } from "@poseloop/vision";
import { clipOptionProblems, syntheticClip } from "./synthetic-clip.js";

const options = { width: 160, height: 120, frames: 24, seed: 9, sceneCutAt: 16 };

describe("syntheticClip", () => {
  it("renders the same pixels and annotations for the same options", () => {
    const [a, b] = [[...syntheticClip(options)], [...syntheticClip(options)]];
    expect(a).toHaveLength(24);
    a.forEach((frame, i) => {
      expect(Buffer.compare(frame.image.data, (b[i] ?? frame).image.data)).toBe(0);
      expect(frame.people).toEqual(b[i]?.people);
    });
    expect([...syntheticClip({ ...options, seed: 10 })][0]?.image.data).not.toEqual(a[0]?.image.data);
  });

  it("has people walking in, out and across each other, with one identity each per shot", () => {
    const { sceneCutAt: _cut, ...oneShot } = options;
    const clip = [...syntheticClip(oneShot)];
    const seen = (identity: number) => clip.filter((f) => f.people.some((p) => p.identity === identity)).map((f) => f.index);
    expect(seen(1)).toHaveLength(24);
    expect(seen(2)).toHaveLength(24);
    // The third walks in after the start, the fourth out before the end.
    expect(seen(3)[0]).toBeGreaterThan(0);
    expect(seen(4)[0]).toBe(0);
    expect(seen(4).at(-1)).toBeLessThan(23);
    // The first two cross: the near one starts left of the far one and ends right of it, boxes overlapping on the way.
    const centre = (frame: (typeof clip)[number], identity: number) => {
      const box = frame.people.find((p) => p.identity === identity)?.bbox ?? [0, 0, 0, 0];
      return box[0] + box[2] / 2;
    };
    expect(centre(clip[0]!, 1)).toBeLessThan(centre(clip[0]!, 2));
    expect(centre(clip[23]!, 1)).toBeGreaterThan(centre(clip[23]!, 2));
    for (const frame of clip) {
      for (const person of frame.people) {
        expect(person.keypoints).toHaveLength(51);
        const [x, y, w, h] = person.bbox;
        expect(x >= 0 && y >= 0 && x + w <= 160 && y + h <= 120).toBe(true);
      }
    }
  });

  it("cuts to another shot: a new background and new identities where the old people were", () => {
    const clip = [...syntheticClip(options)];
    expect(clip.map((f) => f.shot)).toEqual(Array.from({ length: 24 }, (_, i) => (i < 16 ? 0 : 1)));
    const before = new Set(clip.slice(0, 16).flatMap((f) => f.people.map((p) => p.identity)));
    const after = clip.slice(16).flatMap((f) => f.people.map((p) => p.identity));
    expect(after.filter((id) => before.has(id))).toEqual([]);
    const step = (i: number) => histogramDistance(colourHistogram(clip[i - 1]!.image), colourHistogram(clip[i]!.image));
    expect(step(16)).toBeGreaterThan(0.5);
    for (const i of [1, 8, 15, 17, 23]) expect(step(i)).toBeLessThan(0.1);
  });

  it("lists every problem with its options", () => {
    const problems = clipOptionProblems({ width: 8, height: 100, frames: 0, seed: 1.5, sceneCutAt: 3, walks: [{ enter: 5, leave: 2, from: [0, 1], to: [Number.NaN, 1], height: 0 }] });
    expect(problems).toHaveLength(7);
    expect(() => [...syntheticClip({ width: 8, height: 8, frames: 1, seed: 1 })]).toThrow(/width must be/);
  });
});
