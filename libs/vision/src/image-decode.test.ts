import { AppError, Code } from "@poseloop/core";
import sharp, { type Sharp } from "sharp";
import { describe, expect, it } from "vitest";
import { decodeImage, detectImageFormat } from "./image-decode.js";
import { encodeJpeg, encodePng } from "./image-encode.js";
import type { RgbImage } from "./rgb-image.js";

/** A smooth gradient with a coloured square: JPEG keeps it within a few levels. */
function testPattern(width: number, height: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const p = (y * width + x) * 3;
      const inSquare = x >= 8 && x < 24 && y >= 8 && y < 24;
      data[p] = inSquare ? 220 : Math.round((x / (width - 1)) * 255);
      data[p + 1] = inSquare ? 30 : Math.round((y / (height - 1)) * 255);
      data[p + 2] = inSquare ? 40 : 128;
    }
  }
  return { width, height, data };
}

function meanAbsDiff(a: Uint8Array, b: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += Math.abs(a[i]! - b[i]!);
  return sum / a.length;
}

function rawInput(image: RgbImage, channels: 3 | 4 = 3): Sharp {
  return sharp(Buffer.from(image.data), { raw: { width: image.width, height: image.height, channels } });
}

async function expectInvalid(promise: Promise<unknown>, message: RegExp): Promise<void> {
  const error: unknown = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(AppError);
  expect((error as AppError).code).toBe(Code.INVALID_ARGUMENT);
  expect((error as AppError).message).toMatch(message);
}

describe("decodeImage", () => {
  const pattern = testPattern(64, 40);

  it.each([
    ["jpeg", (s: Sharp) => s.jpeg({ quality: 95 }), 3],
    ["png", (s: Sharp) => s.png(), 0],
    ["webp", (s: Sharp) => s.webp({ quality: 95 }), 4],
  ] as const)("reads a %s image written by sharp back to the same size and pixels", async (format, encode, tolerance) => {
    const bytes = await encode(rawInput(pattern)).toBuffer();
    expect(detectImageFormat(bytes)).toBe(format);
    const image = await decodeImage(bytes, format);
    expect([image.width, image.height]).toEqual([64, 40]);
    expect(image.data.length).toBe(64 * 40 * 3);
    if (tolerance === 0) expect(image.data).toEqual(pattern.data);
    else expect(meanAbsDiff(image.data, pattern.data)).toBeLessThan(tolerance);
  });

  it("round-trips its own encoders", async () => {
    expect((await decodeImage(await encodePng(pattern))).data).toEqual(pattern.data);
    const jpeg = await decodeImage(await encodeJpeg(pattern, 95));
    expect(meanAbsDiff(jpeg.data, pattern.data)).toBeLessThan(3);
  });

  it("drops alpha and expands greyscale to RGB", async () => {
    const rgba = new Uint8Array(4 * 4 * 4).map((_, i) => (i % 4 === 3 ? 10 : i % 251));
    const fromRgba = await decodeImage(await sharp(Buffer.from(rgba), { raw: { width: 4, height: 4, channels: 4 } }).png().toBuffer());
    expect(fromRgba.data).toEqual(Uint8Array.from({ length: 48 }, (_, i) => rgba[Math.floor(i / 3) * 4 + (i % 3)]!));

    const grey = Uint8Array.from({ length: 12 }, (_, i) => i * 20);
    const fromGrey = await decodeImage(await sharp(Buffer.from(grey), { raw: { width: 4, height: 3, channels: 1 } }).png().toBuffer());
    expect(fromGrey.data).toEqual(Uint8Array.from({ length: 36 }, (_, i) => grey[Math.floor(i / 3)]!));
  });

  it("applies the EXIF orientation", async () => {
    // Orientation 6: the stored 64x40 picture is shown rotated 90° clockwise, 40 wide and 64 high.
    const bytes = await rawInput(pattern).jpeg({ quality: 95 }).withMetadata({ orientation: 6 }).toBuffer();
    const image = await decodeImage(bytes);
    expect([image.width, image.height]).toEqual([40, 64]);
    // The stored top-left pixel (dark red-green, blue 128) is now top-right.
    const p = (0 * 40 + 39) * 3;
    expect(Math.abs(image.data[p]! - pattern.data[0]!)).toBeLessThan(12);
    expect(Math.abs(image.data[p + 2]! - 128)).toBeLessThan(12);
  });

  it("rejects truncated and random bytes with INVALID_ARGUMENT", async () => {
    const jpeg = await rawInput(testPattern(256, 256)).jpeg().toBuffer();
    await expectInvalid(decodeImage(jpeg.subarray(0, Math.floor(jpeg.length / 2))), /jpeg image .* (truncated|corrupt)/);
    await expectInvalid(decodeImage(jpeg.subarray(0, 200)), /jpeg image/);
    const png = await rawInput(testPattern(256, 256)).png().toBuffer();
    await expectInvalid(decodeImage(png.subarray(0, png.length - 100)), /png image/);

    let seed = 7;
    const random = Uint8Array.from({ length: 4096 }, () => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24);
    await expectInvalid(decodeImage(random), /not a JPEG, PNG or WebP/);
    // A valid signature followed by garbage.
    await expectInvalid(decodeImage(Uint8Array.from([0xff, 0xd8, 0xff, ...random.subarray(0, 500)])), /jpeg image/);
    await expectInvalid(decodeImage(new Uint8Array(0)), /not a JPEG/);
  });

  it("rejects a format other than the one expected, and images over the pixel limit", async () => {
    const png = await rawInput(pattern).png().toBuffer();
    await expectInvalid(decodeImage(png, "jpeg"), /expected a jpeg image, the bytes are png/);
    await expectInvalid(decodeImage(png, { maxPixels: 1000 }), /exceeds the limit of 1000 pixels/);
  });
});
