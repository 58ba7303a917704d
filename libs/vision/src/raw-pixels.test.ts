import { AppError, Code } from "@poseloop/core";
import { describe, expect, it } from "vitest";
import { fromRawPixels, type RawPixelFormat } from "./raw-pixels.js";

const width = 3;
const height = 2;
// The expected RGB for pixel (x, y).
const rgbAt = (x: number, y: number): [number, number, number] => [10 * x + 1, 50 + 10 * y, 100 + x + y];
const expected = Uint8Array.from({ length: width * height * 3 }, (_, i) => {
  const pixel = Math.floor(i / 3);
  return rgbAt(pixel % width, Math.floor(pixel / width))[i % 3]!;
});

function layout(format: RawPixelFormat, stride: number, trimLastRow = false): Uint8Array {
  const channels = { RGB8: 3, BGR8: 3, RGBA8: 4, GRAY8: 1 }[format];
  const data = new Uint8Array(stride * height - (trimLastRow ? stride - width * channels : 0)).fill(0xee);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const [r, g, b] = rgbAt(x, y);
      const p = y * stride + x * channels;
      if (format === "RGB8") data.set([r, g, b], p);
      if (format === "BGR8") data.set([b, g, r], p);
      if (format === "RGBA8") data.set([r, g, b, 77], p);
      if (format === "GRAY8") data[p] = g;
    }
  }
  return data;
}

function expectInvalid(run: () => unknown, message: RegExp): void {
  try {
    run();
  } catch (error) {
    expect(AppError.is(error, Code.INVALID_ARGUMENT)).toBe(true);
    expect((error as Error).message).toMatch(message);
    return;
  }
  throw new Error("expected INVALID_ARGUMENT");
}

describe("fromRawPixels", () => {
  it.each(["RGB8", "BGR8", "RGBA8"] as const)("converts %s exactly, packed and with padded rows", (format) => {
    const channels = format === "RGBA8" ? 4 : 3;
    for (const stride of [0, width * channels, width * channels + 5]) {
      const data = layout(format, stride === 0 ? width * channels : stride);
      const image = fromRawPixels({ width, height, format, stride, data });
      expect([image.width, image.height]).toEqual([width, height]);
      expect(image.data).toEqual(expected);
    }
  });

  it("converts GRAY8 to equal R, G and B", () => {
    const image = fromRawPixels({ width, height, format: "GRAY8", stride: 8, data: layout("GRAY8", 8) });
    for (let pixel = 0; pixel < width * height; pixel++) {
      const g = expected[pixel * 3 + 1]!;
      expect([...image.data.subarray(pixel * 3, pixel * 3 + 3)]).toEqual([g, g, g]);
    }
  });

  it("accepts a buffer that ends right after the last pixel", () => {
    const data = layout("BGR8", 16, true);
    expect(data.length).toBe(16 + 9);
    expect(fromRawPixels({ width, height, format: "BGR8", stride: 16, data }).data).toEqual(expected);
  });

  it("never shares memory with the input", () => {
    const data = layout("RGB8", 9);
    const image = fromRawPixels({ width, height, format: "RGB8", data });
    data[0] = 99;
    expect(image.data[0]).toBe(expected[0]);
  });

  it("rejects wrong sizes, strides, formats and dimensions with INVALID_ARGUMENT", () => {
    const data = layout("RGB8", 9);
    expectInvalid(() => fromRawPixels({ width, height, format: "RGB8", data: data.subarray(1) }), /needs 18 bytes, got 17/);
    expectInvalid(() => fromRawPixels({ width, height, format: "RGBA8", data }), /RGBA8 .* needs 24 bytes, got 18/);
    expectInvalid(() => fromRawPixels({ width, height: 3, format: "RGB8", data }), /needs 27 bytes/);
    expectInvalid(() => fromRawPixels({ width, height, format: "RGB8", stride: 8, data }), /stride 8 is invalid/);
    expectInvalid(() => fromRawPixels({ width, height, format: "RGB8", stride: 9.5, data }), /stride 9.5 is invalid/);
    expectInvalid(() => fromRawPixels({ width: 0, height, format: "RGB8", data: new Uint8Array(0) }), /0x2 is invalid/);
    expectInvalid(() => fromRawPixels({ width: -3, height, format: "RGB8", data }), /invalid/);
    expectInvalid(() => fromRawPixels({ width, height, format: "YUV420" as RawPixelFormat, data }), /unknown raw pixel format "YUV420"/);
    expectInvalid(
      () => fromRawPixels({ width: 100_000, height: 100_000, format: "GRAY8", data: new Uint8Array(0) }),
      /exceeds the limit/,
    );
    expectInvalid(() => fromRawPixels({ width, height, format: "RGB8", data }, { maxPixels: 5 }), /exceeds the limit of 5 pixels/);
  });
});
