import { create } from "@bufbuild/protobuf";
import { PersonSchema, type Person } from "@poseloop/proto/poseloop/common/v1/pose_pb";
import { createRgbImage, trackColour, type RgbImage } from "@poseloop/vision";
import { describe, expect, it } from "vitest";
import { annotatePicture } from "./pose-annotation.js";

const person = (x: number, trackId?: number): Person =>
  create(PersonSchema, {
    bbox: { x, y: 40, width: 40, height: 80 },
    score: 1,
    // Keypoints below the drawing threshold: only the box and its label are drawn.
    keypoints: Array.from({ length: 17 }, () => ({ x: x + 20, y: 80, score: 0 })),
    ...(trackId === undefined ? {} : { trackId }),
  });

const pixel = (image: RgbImage, x: number, y: number): number[] => Array.from(image.data.subarray((y * image.width + x) * 3, (y * image.width + x) * 3 + 3));

describe("annotatePicture", () => {
  it("draws each track's box and #id label in the colour of its id, the same in every frame", () => {
    const grey = createRgbImage(200, 160, [128, 128, 128]);
    const first = annotatePicture(grey, [person(20, 3), person(120, 4)], { caption: "", minScore: 0.5 });
    // The person with track 3 has moved and comes second in the next frame: its colour follows its id.
    const next = annotatePicture(grey, [person(100, 4), person(30, 3)], { caption: "", minScore: 0.5 });
    expect(pixel(first, 20, 80)).toEqual([...trackColour(3)]);
    expect(pixel(first, 120, 80)).toEqual([...trackColour(4)]);
    expect(pixel(next, 30, 80)).toEqual([...trackColour(3)]);
    expect(pixel(next, 100, 80)).toEqual([...trackColour(4)]);
    expect(trackColour(3)).not.toEqual(trackColour(4));
    // The label sits above the box, in the track's colour.
    const label = (image: RgbImage, x: number) => {
      let found = 0;
      for (let y = 20; y < 40; y++) for (let dx = 0; dx < 20; dx++) if (pixel(image, x + dx, y).join() === trackColour(3).join()) found++;
      return found;
    };
    expect(label(first, 20)).toBeGreaterThan(5);
    // Without a track id, a plain box and no label.
    const untracked = annotatePicture(grey, [person(20)], { caption: "", minScore: 0.5 });
    expect(pixel(untracked, 20, 80)).not.toEqual([...trackColour(3)]);
    expect(label(untracked, 20)).toBe(0);
  });
});
