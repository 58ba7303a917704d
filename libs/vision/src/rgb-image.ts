import { AppError, Code } from "@poseloop/core";

/** An 8-bit RGB image, rows packed without padding: pixel (x, y) starts at byte 3·(y·width + x). */
export interface RgbImage {
  readonly width: number;
  readonly height: number;
  readonly data: Uint8Array;
}

/** A colour as [red, green, blue], each 0–255. */
export type Rgb = readonly [number, number, number];

/**
 * The largest image accepted by default (2²⁶ ≈ 67 megapixels, twice an 8K UHD frame). A bound is needed because
 * a few header bytes can announce a gigapixel image and exhaust memory before a single pixel is read.
 */
export const DEFAULT_MAX_PIXELS = 1 << 26;

/** A new image filled with `fill` (black by default). */
export function createRgbImage(width: number, height: number, fill: Rgb = [0, 0, 0]): RgbImage {
  assertImageSize(width, height);
  const data = new Uint8Array(width * height * 3);
  if (fill[0] !== 0 || fill[1] !== 0 || fill[2] !== 0) {
    data[0] = fill[0];
    data[1] = fill[1];
    data[2] = fill[2];
    // Doubling copies fill 25 MB in a few milliseconds, where a per-pixel loop takes ten times longer.
    for (let filled = 3; filled < data.length; filled *= 2) data.copyWithin(filled, 0, Math.min(filled, data.length - filled));
  }
  return { width, height, data };
}

/** A deep copy, so drawing on it leaves `image` untouched. */
export function cloneRgbImage(image: RgbImage): RgbImage {
  assertRgbImage(image);
  return { width: image.width, height: image.height, data: image.data.slice() };
}

/** Throws INVALID_ARGUMENT unless width and height are positive integers with at most `maxPixels` pixels. */
export function assertImageSize(width: number, height: number, maxPixels = DEFAULT_MAX_PIXELS): void {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
    throw new AppError(Code.INVALID_ARGUMENT, `image size ${width}x${height} is invalid: width and height must be positive integers`);
  }
  if (width * height > maxPixels) {
    throw new AppError(Code.INVALID_ARGUMENT, `image size ${width}x${height} exceeds the limit of ${maxPixels} pixels`);
  }
}

/** Throws INVALID_ARGUMENT unless `image` has a valid size and exactly width·height·3 bytes. */
export function assertRgbImage(image: RgbImage): void {
  assertImageSize(image.width, image.height, Number.MAX_SAFE_INTEGER);
  const expected = image.width * image.height * 3;
  if (image.data.length !== expected) {
    throw new AppError(
      Code.INVALID_ARGUMENT,
      `an RGB image of ${image.width}x${image.height} needs ${expected} bytes, got ${image.data.length}`,
    );
  }
}
