import { describe, expect, it } from "vitest";
import { BLAZEPOSE33, PoseTracker, type TrackablePerson } from "@poseloop/pose";

const K = 17;

function person(x: number, y: number, width = 60, height = 160, k = K): TrackablePerson {
  const keypoints = Array.from({ length: k }, (_, j) => [x + (j % 3) * (width / 3), y + j * (height / k)]).flat();
  return { box: { x, y, width, height }, keypoints };
}

describe("PoseTracker", () => {
  it.each(["iou", "oks"] as const)("keeps ids stable as people move and gives a newcomer a new id (%s)", (metric) => {
    const tracker = new PoseTracker({ metric });
    expect(tracker.update([person(100, 50), person(400, 60)])).toEqual([1, 2]);
    // Listed in the other order and moved a little: the ids follow the people, not the list.
    expect(tracker.update([person(404, 62), person(103, 51)])).toEqual([2, 1]);
    expect(tracker.update([person(106, 52), person(700, 40), person(408, 64)])).toEqual([1, 3, 2]);
  });

  it("keeps a track through missed frames up to maxAgeFrames, then forgets it", () => {
    const tracker = new PoseTracker({ maxAgeFrames: 2 });
    expect(tracker.update([person(100, 50)])).toEqual([1]);
    tracker.update([]);
    tracker.update([]);
    expect(tracker.update([person(101, 50)])).toEqual([1]);
    tracker.update([]);
    tracker.update([]);
    tracker.update([]);
    expect(tracker.trackIds).toEqual([]);
    expect(tracker.update([person(101, 50)])).toEqual([2]);
  });

  it("matches each track once, the most similar pair first", () => {
    const tracker = new PoseTracker();
    tracker.update([person(100, 50)]);
    // Both overlap track 1; the closer one keeps the id, the other starts a track.
    expect(tracker.update([person(130, 50), person(102, 50)])).toEqual([2, 1]);
  });

  it.each(["iou", "oks"] as const)("looks for a moving person where their velocity takes them, also after frames unseen (%s)", (metric) => {
    // A 60x160 person walking 30 px a frame (10 for OKS): consecutive poses still match (box IoU 1/3, OKS 0.64),
    // three frames apart they do not (IoU 0, OKS 0.13), so only a track that moves on with them keeps them.
    const step = metric === "iou" ? 30 : 10;
    const walk = (frame: number) => person(100 + step * frame, 50);
    const tracker = new PoseTracker({ metric, matchThreshold: metric === "iou" ? 0.3 : 0.5 });
    const ids = [0, 1, 2, 3].map((frame) => tracker.update([walk(frame)])[0]);
    // Hidden for two frames (someone crossed in front), then seen again three steps on from where it was last seen.
    tracker.update([]);
    tracker.update([]);
    ids.push(tracker.update([walk(6)])[0]);
    expect(ids).toEqual([1, 1, 1, 1, 1]);
    // Standing still does not carry the old motion on for long: the velocity follows the new displacements.
    for (let i = 0; i < 6; i++) expect(tracker.update([walk(6)])).toEqual([1]);
  });

  it("does not match below the threshold", () => {
    const tracker = new PoseTracker({ matchThreshold: 0.9 });
    tracker.update([person(100, 50)]);
    expect(tracker.update([person(115, 50)])).toEqual([2]);
  });

  it("tracks by OKS with another schema's sigmas, its people holding that many keypoints", () => {
    const tracker = new PoseTracker({ metric: "oks", sigmas: BLAZEPOSE33.sigmas });
    expect(tracker.update([person(100, 50, 60, 160, 33), person(400, 60, 60, 160, 33)])).toEqual([1, 2]);
    expect(tracker.update([person(403, 61, 60, 160, 33), person(102, 51, 60, 160, 33)])).toEqual([2, 1]);
    // COCO-17 people are not this tracker's.
    expect(() => tracker.update([person(104, 52)])).toThrow(RangeError);
  });

  it("starts its ids at firstId, so a tracker taking over a stream names no one an earlier tracker named", () => {
    const before = new PoseTracker();
    before.update([person(100, 50), person(400, 60)]);
    expect(before.nextId).toBe(3);
    const after = new PoseTracker({ metric: "oks", sigmas: BLAZEPOSE33.sigmas, firstId: before.nextId });
    expect(after.update([person(100, 50, 60, 160, 33)])).toEqual([3]);
    expect(after.nextId).toBe(4);
    expect(() => new PoseTracker({ firstId: 0 })).toThrow(RangeError);
  });

  it("needs keypoints for OKS tracking and refuses NaN boxes", () => {
    expect(() => new PoseTracker({ metric: "oks" }).update([{ box: { x: 0, y: 0, width: 10, height: 10 } }])).toThrow(TypeError);
    expect(() => new PoseTracker().update([{ box: { x: Number.NaN, y: 0, width: 10, height: 10 } }])).toThrow(RangeError);
  });
});
