import { createRgbImage, encodeJpeg, encodePng } from "@poseloop/vision";
import { describe, expect, it } from "vitest";
import { decodePixels } from "./frame-cost.js";

describe("decodePixels", () => {
  it("reads the size of PNG and JPEG frames from their headers", async () => {
    const image = createRgbImage(320, 200, [10, 200, 30]);
    expect(decodePixels({ kind: "encoded", data: await encodePng(image) })).toBe(64_000);
    expect(decodePixels({ kind: "encoded", data: await encodeJpeg(image, 80) })).toBe(64_000);
  });

  it("counts a small PNG of a 4K frame as 4K, not as its few bytes", async () => {
    const png = await encodePng(createRgbImage(3840, 2160, [0, 0, 0]));
    expect(png.byteLength).toBeLessThan(1_000_000);
    expect(decodePixels({ kind: "encoded", data: png })).toBe(3840 * 2160);
  });

  it("takes raw frames at their stated size and unreadable headers at a pixel per byte", () => {
    expect(decodePixels({ kind: "raw", width: 640, height: 480, format: "RGB8", stride: 1920, data: new Uint8Array(0) })).toBe(307_200);
    expect(decodePixels({ kind: "encoded", data: new Uint8Array(5000).fill(7) })).toBe(5000);
    expect(decodePixels({ kind: "encoded", data: Uint8Array.of(0xff, 0xd8, 0xff, 0xe0, 0x00) })).toBe(5);
  });
});
