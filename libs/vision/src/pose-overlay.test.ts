import { COCO17 } from "@poseloop/pose";
import { AppError, Code } from "@poseloop/core";
import { describe, expect, it } from "vitest";
import { DEFAULT_SIDE_COLOURS, drawPoses, trackColour, type OverlayPerson } from "./pose-overlay.js";
import { createRgbImage, type RgbImage } from "./rgb-image.js";

const pixel = (image: RgbImage, x: number, y: number): number[] => [...image.data.subarray((y * image.width + x) * 3, (y * image.width + x) * 3 + 3)];

/** A standing figure in a 200x200 frame, every keypoint scored 0.9. */
function standingPerson(): number[] {
  const points: [number, number][] = [
    [100, 30], [104, 26], [96, 26], [110, 28], [90, 28],
    [120, 50], [80, 50], [130, 80], [70, 80], [135, 110], [65, 110],
    [112, 110], [88, 110], [114, 145], [86, 145], [115, 180], [85, 180],
  ];
  return points.flatMap(([x, y]) => [x, y, 0.9]);
}

describe("drawPoses", () => {
  const background = createRgbImage(200, 200, [10, 20, 30]);

  it("paints each joint in its side's colour and leaves the original untouched", () => {
    const before = background.data.slice();
    const out = drawPoses(background, [{ keypoints: standingPerson() }], COCO17, { jointRadius: 3 });
    expect(background.data).toEqual(before);
    expect(out).not.toBe(background);
    expect(pixel(out, 120, 50)).toEqual([...DEFAULT_SIDE_COLOURS.left]); // left shoulder
    expect(pixel(out, 80, 50)).toEqual([...DEFAULT_SIDE_COLOURS.right]); // right shoulder
    expect(pixel(out, 100, 30)).toEqual([...DEFAULT_SIDE_COLOURS.centre]); // nose
    // Midway along the left forearm: the limb colour; far from the body: untouched.
    expect(pixel(out, 132, 95)).toEqual([...DEFAULT_SIDE_COLOURS.left]);
    expect(pixel(out, 180, 10)).toEqual([10, 20, 30]);
  });

  it("skips keypoints under the minimum score and the limbs that touch them", () => {
    const keypoints = standingPerson();
    keypoints[9 * 3 + 2] = 0.1; // left wrist
    const out = drawPoses(background, [{ keypoints: Float32Array.from(keypoints) }], COCO17, { jointRadius: 3, minScore: 0.5 });
    expect(pixel(out, 135, 110)).toEqual([10, 20, 30]);
    expect(pixel(out, 132, 95)).toEqual([10, 20, 30]);
    expect(pixel(out, 130, 80)).toEqual([...DEFAULT_SIDE_COLOURS.left]); // the elbow is still drawn
  });

  it("draws boxes in the track's colour, its id label and a caption", () => {
    const person: OverlayPerson = { keypoints: standingPerson(), bbox: { x: 50, y: 20, width: 100, height: 170 }, trackId: 3 };
    const out = drawPoses(background, [person], COCO17, { caption: "v7 30.0 fps" });
    expect(pixel(out, 50, 100)).toEqual([...trackColour(3)]);
    expect(pixel(out, 149, 100)).toEqual([...trackColour(3)]);
    let labelInk = 0;
    for (let y = 0; y < 20; y++) for (let x = 50; x < 70; x++) if (pixel(out, x, y).join() === trackColour(3).join()) labelInk++;
    expect(labelInk).toBeGreaterThan(10);
    let captionInk = 0;
    for (let y = 0; y < 14; y++) for (let x = 0; x < 80; x++) if (pixel(out, x, y).join() === "255,255,255") captionInk++;
    expect(captionInk).toBeGreaterThan(30);
  });

  it("rejects keypoints that do not match the schema", () => {
    expect(() => drawPoses(background, [{ keypoints: [1, 2, 3] }], COCO17)).toThrow(AppError);
    try {
      drawPoses(background, [{ keypoints: [1, 2, 3] }], COCO17);
    } catch (error) {
      expect((error as AppError).code).toBe(Code.INVALID_ARGUMENT);
    }
  });
});
