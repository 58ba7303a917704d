import { AppError, Code, withDeadline } from "@poseloop/core";
import sharp, { type Sharp } from "sharp";
import { assertRgbImage, type RgbImage } from "./rgb-image.js";

export interface EncodeImageOptions {
  /** Deadline for the encode; default 10 s. */
  timeoutMs?: number;
}

const DEFAULT_ENCODE_TIMEOUT_MS = 10_000;

/** Encodes as baseline JPEG (4:2:0 chroma) with `quality` 1–100; the same pixels always give the same bytes. */
export async function encodeJpeg(image: RgbImage, quality = 90, options: EncodeImageOptions = {}): Promise<Uint8Array> {
  if (!Number.isInteger(quality) || quality < 1 || quality > 100) {
    throw new AppError(Code.INVALID_ARGUMENT, `JPEG quality must be an integer from 1 to 100, got ${quality}`);
  }
  return encode(image, "JPEG", (pipeline) => pipeline.jpeg({ quality }), options);
}

/** Encodes as lossless PNG. */
export async function encodePng(image: RgbImage, options: EncodeImageOptions = {}): Promise<Uint8Array> {
  return encode(image, "PNG", (pipeline) => pipeline.png(), options);
}

async function encode(
  image: RgbImage,
  what: string,
  format: (pipeline: Sharp) => Sharp,
  options: EncodeImageOptions,
): Promise<Uint8Array> {
  assertRgbImage(image);
  const timeoutMs = options.timeoutMs ?? DEFAULT_ENCODE_TIMEOUT_MS;
  const input = Buffer.from(image.data.buffer, image.data.byteOffset, image.data.byteLength);
  const pipeline = format(
    sharp(input, { raw: { width: image.width, height: image.height, channels: 3 } }).timeout({
      seconds: Math.max(1, Math.ceil(timeoutMs / 1000)),
    }),
  );
  try {
    const bytes = await withDeadline(pipeline.toBuffer(), timeoutMs, `encoding a ${what} image`);
    return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length);
  } catch (error) {
    if (error instanceof AppError) throw error;
    throw new AppError(Code.INTERNAL, `encoding a ${image.width}x${image.height} ${what} image failed`, { cause: error });
  }
}
