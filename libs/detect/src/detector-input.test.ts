import { create } from "@bufbuild/protobuf";
import { DetectorSpecSchema, ResizeMode } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { describe, expect, it } from "vitest";
import { detectorInput } from "./detector-input.js";

describe("detectorInput", () => {
  it("letterboxes a landscape frame top-left aligned and maps boxes back to frame pixels", () => {
    const geometry = detectorInput(1280, 720, create(DetectorSpecSchema, {}), 320, 320);
    expect(geometry.scale).toBe(0.25);
    expect([geometry.padX, geometry.padY]).toEqual([0, 0]);
    expect([geometry.contentWidth, geometry.contentHeight]).toEqual([320, 180]);
    expect(geometry.toFrame({ x1: 10, y1: 20, x2: 110, y2: 170, score: 0.9 })).toEqual({ x1: 40, y1: 80, x2: 440, y2: 680, score: 0.9 });
  });

  it("clips boxes that reach into the padding or past the frame", () => {
    const geometry = detectorInput(640, 480, create(DetectorSpecSchema, { resize: ResizeMode.LETTERBOX }), 320, 320);
    // The frame covers input rows 0..240; a box down to row 300 ends at the frame's bottom edge.
    expect(geometry.toFrame({ x1: -5, y1: 200, x2: 330, y2: 300, score: 1 })).toEqual({ x1: 0, y1: 400, x2: 640, y2: 480, score: 1 });
  });

  it("stretches each axis on its own in STRETCH mode", () => {
    const geometry = detectorInput(640, 480, create(DetectorSpecSchema, { resize: ResizeMode.STRETCH }), 320, 320);
    expect([geometry.scaleX, geometry.scaleY]).toEqual([0.5, 320 / 480]);
    expect([geometry.contentWidth, geometry.contentHeight]).toEqual([320, 320]);
    const box = geometry.toFrame({ x1: 32, y1: 32, x2: 64, y2: 64, score: 0.5 });
    expect(box.x1).toBeCloseTo(64);
    expect(box.y1).toBeCloseTo(48);
    expect(box.y2).toBeCloseTo(96);
  });

  it("samples input pixel centres from the frame's pixel centres", () => {
    const { inverseAffine } = detectorInput(640, 640, create(DetectorSpecSchema, {}), 320, 320);
    const [a, , c] = inverseAffine;
    // Input pixel 0 covers frame pixels 0 and 1: its centre is frame x = 0.5.
    expect(a * 0 + c).toBeCloseTo(0.5);
    expect(a * 319 + c).toBeCloseTo(638.5);
  });

  it("rejects sizes that are not positive integers, naming each", () => {
    expect(() => detectorInput(0, 480.5, create(DetectorSpecSchema, {}), 320, -1)).toThrow(/frame width.*frame height.*input height/);
  });
});
