import { create } from "@bufbuild/protobuf";
import { AppError, Code } from "@poseloop/core";
import { FrameSchema, ImageFormat, type Frame } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { describe, expect, it } from "vitest";
import type { InferenceLimits } from "./config.js";
import { frameJob } from "./frame-conversion.js";

const limits = { maxFrameBytes: 1 << 20, maxFramePixels: 3840 * 2160, maxBoxesPerFrame: 64 } as InferenceLimits;
const settings = { flipTest: false, minKeypointScore: 0.2, maxPersons: 0 };

const JPEG = Uint8Array.from([0xff, 0xd8, 0xff, 0xe0, 0, 16, 0x4a, 0x46, 0x49, 0x46, 0, 1]);
const PNG = Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13]);
const WEBP = Uint8Array.from([0x52, 0x49, 0x46, 0x46, 4, 0, 0, 0, 0x57, 0x45, 0x42, 0x50, 0x56, 0x50, 0x38, 0x20]);

function encoded(data: Uint8Array, format: ImageFormat, personBoxes: Frame["personBoxes"] = []): Frame {
  return create(FrameSchema, { frameId: 5n, image: { case: "encoded", value: { data, format } }, personBoxes });
}

function refusal(frame: Frame): AppError {
  try {
    frameJob(frame, settings, limits);
  } catch (error) {
    if (AppError.is(error, Code.INVALID_ARGUMENT)) return error;
    throw error;
  }
  throw new Error("the frame was accepted");
}

describe("frameJob", () => {
  it("accepts an image whose declared format matches its bytes, or an unspecified format", () => {
    for (const [data, format] of [[JPEG, ImageFormat.JPEG], [PNG, ImageFormat.PNG], [WEBP, ImageFormat.WEBP], [PNG, ImageFormat.UNSPECIFIED]] as const) {
      expect(frameJob(encoded(data, format), settings, limits).image.kind).toBe("encoded");
    }
  });

  it("refuses an image whose bytes are not the format it declares, saying what they are", () => {
    expect(refusal(encoded(JPEG, ImageFormat.PNG)).message).toMatch(/frame 5: declared PNG, but the bytes are JPEG/);
    expect(refusal(encoded(Uint8Array.from([1, 2, 3, 4]), ImageFormat.WEBP)).message).toMatch(/declared WebP, but the bytes are none of JPEG, PNG or WebP/);
    expect(refusal(encoded(JPEG, 42 as ImageFormat)).message).toMatch(/unknown image format 42/);
  });

  it("says what is wrong with a person box of 2e9 pixels instead of a bare invalid_argument", () => {
    const error = refusal(encoded(JPEG, ImageFormat.JPEG, [{ x: 0, y: 0, width: 2e9, height: 2e9, score: 0 }] as Frame["personBoxes"]));
    expect(error.message).toMatch(/person box 0 .*2000000000.* beyond ±1048576 pixels/);
  });
});
