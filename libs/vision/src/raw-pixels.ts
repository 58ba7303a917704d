import { AppError, Code } from "@poseloop/core";
import { assertImageSize, DEFAULT_MAX_PIXELS, type RgbImage } from "./rgb-image.js";

/** Uncompressed pixel layouts a client may send (video frames straight from a camera or decoder). */
export const RawPixelFormat = {
  RGB8: "RGB8",
  BGR8: "BGR8",
  RGBA8: "RGBA8",
  GRAY8: "GRAY8",
} as const;

export type RawPixelFormat = (typeof RawPixelFormat)[keyof typeof RawPixelFormat];

const bytesPerPixel: Readonly<Record<RawPixelFormat, number>> = { RGB8: 3, BGR8: 3, RGBA8: 4, GRAY8: 1 };

/** Uncompressed pixels in one of the raw formats. */
export interface RawPixels {
  readonly width: number;
  readonly height: number;
  readonly format: RawPixelFormat;
  /** Bytes from the start of one row to the next; 0 or absent means rows are packed (width · bytes per pixel). */
  readonly stride?: number;
  readonly data: Uint8Array;
}

export interface RawPixelsOptions {
  /** Largest accepted width·height; default DEFAULT_MAX_PIXELS. */
  maxPixels?: number;
}

/** Bytes per pixel of a raw format. */
export function rawBytesPerPixel(format: RawPixelFormat): number {
  return bytesPerPixel[format];
}

/**
 * Converts raw pixels to a packed RgbImage (always a new buffer). The data must hold exactly `height` rows of
 * `stride` bytes, or the same without the padding of the last row (buffers cropped right after the last pixel);
 * any other length means the width, height, format or stride is wrong, and is refused as INVALID_ARGUMENT rather
 * than read as a skewed picture.
 */
export function fromRawPixels(pixels: RawPixels, options: RawPixelsOptions = {}): RgbImage {
  const { width, height, format, data } = pixels;
  const channels = (bytesPerPixel as Readonly<Record<string, number>>)[format];
  if (channels === undefined) {
    throw new AppError(Code.INVALID_ARGUMENT, `unknown raw pixel format "${String(format)}" (expected RGB8, BGR8, RGBA8 or GRAY8)`);
  }
  assertImageSize(width, height, options.maxPixels ?? DEFAULT_MAX_PIXELS);
  const rowBytes = width * channels;
  const stride = pixels.stride === undefined || pixels.stride === 0 ? rowBytes : pixels.stride;
  if (!Number.isInteger(stride) || stride < rowBytes) {
    throw new AppError(
      Code.INVALID_ARGUMENT,
      `row stride ${stride} is invalid for ${width} ${format} pixels per row: it must be an integer of at least ${rowBytes} bytes`,
    );
  }
  const full = stride * height;
  const trimmed = stride * (height - 1) + rowBytes;
  if (data.length !== full && data.length !== trimmed) {
    const expected = full === trimmed ? `${full}` : `${full} (or ${trimmed} without the last row's padding)`;
    throw new AppError(
      Code.INVALID_ARGUMENT,
      `raw ${format} image ${width}x${height} with stride ${stride} needs ${expected} bytes, got ${data.length}`,
    );
  }

  const out = new Uint8Array(width * height * 3);
  if (format === "RGB8") {
    if (stride === rowBytes) out.set(data.subarray(0, out.length));
    else for (let y = 0; y < height; y++) out.set(data.subarray(y * stride, y * stride + rowBytes), y * rowBytes);
    return { width, height, data: out };
  }
  let o = 0;
  for (let y = 0; y < height; y++) {
    let i = y * stride;
    const end = i + rowBytes;
    switch (format) {
      case "BGR8":
        for (; i < end; i += 3, o += 3) {
          out[o] = data[i + 2]!;
          out[o + 1] = data[i + 1]!;
          out[o + 2] = data[i]!;
        }
        break;
      case "RGBA8":
        for (; i < end; i += 4, o += 3) {
          out[o] = data[i]!;
          out[o + 1] = data[i + 1]!;
          out[o + 2] = data[i + 2]!;
        }
        break;
      case "GRAY8":
        for (; i < end; i++, o += 3) {
          const v = data[i]!;
          out[o] = v;
          out[o + 1] = v;
          out[o + 2] = v;
        }
        break;
    }
  }
  return { width, height, data: out };
}
