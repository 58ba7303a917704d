import { AppError, Code, withDeadline } from "@poseloop/core";
import sharp from "sharp";
import { assertImageSize, DEFAULT_MAX_PIXELS, type RgbImage } from "./rgb-image.js";

/** Compressed image formats the decoder reads. */
export const EncodedImageFormat = {
  JPEG: "jpeg",
  PNG: "png",
  WEBP: "webp",
} as const;

export type EncodedImageFormat = (typeof EncodedImageFormat)[keyof typeof EncodedImageFormat];

export interface DecodeImageOptions {
  /** The expected format; the bytes are checked against it. Default: detected from the bytes. */
  format?: EncodedImageFormat;
  /** Largest accepted width·height, checked from the header before pixels are decoded; default DEFAULT_MAX_PIXELS. */
  maxPixels?: number;
  /** Deadline for the decode; default 10 s. */
  timeoutMs?: number;
}

const DEFAULT_DECODE_TIMEOUT_MS = 10_000;

/** The format announced by the first bytes (the file signature), or undefined when it is none of ours. */
export function detectImageFormat(bytes: Uint8Array): EncodedImageFormat | undefined {
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return "jpeg";
  const png = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (bytes.length >= 8 && png.every((byte, i) => bytes[i] === byte)) return "png";
  const ascii = (from: number, to: number): string => String.fromCharCode(...bytes.subarray(from, to));
  if (bytes.length >= 12 && ascii(0, 4) === "RIFF" && ascii(8, 12) === "WEBP") return "webp";
  return undefined;
}

/**
 * Decodes a JPEG, PNG or WebP image into packed RGB8: the EXIF orientation is applied (the pixels come out the
 * way a viewer shows them), alpha is dropped, greyscale and 16-bit images are converted to 8-bit sRGB.
 * Corrupt or truncated bytes, an unknown format, or an image over `maxPixels` reject with INVALID_ARGUMENT;
 * a decode past the deadline rejects with DEADLINE_EXCEEDED. `options` may be just the expected format.
 */
export async function decodeImage(bytes: Uint8Array, options: DecodeImageOptions | EncodedImageFormat = {}): Promise<RgbImage> {
  const resolved: DecodeImageOptions = typeof options === "string" ? { format: options } : options;
  const maxPixels = resolved.maxPixels ?? DEFAULT_MAX_PIXELS;
  const timeoutMs = resolved.timeoutMs ?? DEFAULT_DECODE_TIMEOUT_MS;
  const detected = detectImageFormat(bytes);
  if (detected === undefined) {
    throw new AppError(Code.INVALID_ARGUMENT, `image bytes (${bytes.length}) are not a JPEG, PNG or WebP image`);
  }
  if (resolved.format !== undefined && resolved.format !== detected) {
    throw new AppError(Code.INVALID_ARGUMENT, `expected a ${resolved.format} image, the bytes are ${detected}`);
  }
  // A typed array that is not a Buffer would be taken by sharp for raw pixels: wrap the same memory instead.
  const input = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  try {
    const pipeline = sharp(input, { failOn: "truncated", limitInputPixels: maxPixels, autoOrient: true })
      .timeout({ seconds: Math.max(1, Math.ceil(timeoutMs / 1000)) })
      .removeAlpha()
      .toColourspace("srgb")
      .raw({ depth: "uchar" });
    const { data, info } = await withDeadline(pipeline.toBuffer({ resolveWithObject: true }), timeoutMs, `decoding a ${detected} image`);
    assertImageSize(info.width, info.height, maxPixels);
    if (info.channels !== 3 || data.length !== info.width * info.height * 3) {
      throw new AppError(Code.INVALID_ARGUMENT, `the ${detected} image decoded to ${info.channels} channels, not RGB`);
    }
    return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
  } catch (error) {
    throw decodeError(error, detected, bytes.length, maxPixels);
  }
}

function decodeError(error: unknown, format: EncodedImageFormat, size: number, maxPixels: number): AppError {
  if (error instanceof AppError) return error;
  const message = error instanceof Error ? error.message : String(error);
  if (/pixel limit/i.test(message)) {
    return new AppError(Code.INVALID_ARGUMENT, `the ${format} image exceeds the limit of ${maxPixels} pixels`, { cause: error });
  }
  if (/timeout/i.test(message)) {
    return new AppError(Code.DEADLINE_EXCEEDED, `decoding a ${format} image timed out`, { cause: error });
  }
  // libvips' own words stay in the cause: they are for the log, not for the client.
  const what = /premature end|truncated|end of file|unexpected end/i.test(message) ? "truncated" : "corrupt";
  return new AppError(Code.INVALID_ARGUMENT, `the ${format} image (${size} bytes) is ${what} and cannot be decoded`, { cause: error });
}
