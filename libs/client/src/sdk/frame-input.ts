import type { MessageInitShape } from "@bufbuild/protobuf";
import { AppError, Code } from "@poseloop/core";
import { ImageFormat, PixelFormat, type FrameSchema } from "@poseloop/proto/poseloop/inference/v1/inference_pb";

/** Layouts of uncompressed pixels, as the inferencer reads them. */
export const PixelLayout = {
  RGB8: "rgb8",
  BGR8: "bgr8",
  RGBA8: "rgba8",
  GRAY8: "gray8",
} as const;
export type PixelLayout = (typeof PixelLayout)[keyof typeof PixelLayout];

/** Uncompressed pixels, rows from the top. */
export interface RawFrameImage {
  readonly width: number;
  readonly height: number;
  readonly data: Uint8Array;
  /** Default rgb8. */
  readonly format?: PixelLayout;
  /** Bytes from one row to the next; default tightly packed. */
  readonly stride?: number;
}

/** A person to estimate, in frame pixels. */
export interface PersonBox {
  readonly x: number;
  readonly y: number;
  readonly width: number;
  readonly height: number;
}

interface FrameCommon {
  /** Echoed in the frame's result; default 1, 2, 3... in the order the frames are sent. */
  readonly id?: bigint | number;
  /** Presentation time in microseconds (echoed; smoothing uses it). */
  readonly ptsUs?: bigint | number;
  /** People to estimate; none: the whole frame is one person. */
  readonly personBoxes?: readonly PersonBox[];
}

/** A frame to send: raw pixels, or the bytes of a JPEG, PNG or WebP image. */
export type FrameInput =
  | (FrameCommon & { readonly raw: RawFrameImage; readonly encoded?: never })
  | (FrameCommon & { readonly encoded: Uint8Array; readonly raw?: never });

const PIXEL_FORMATS: Readonly<Record<PixelLayout, PixelFormat>> = {
  rgb8: PixelFormat.RGB8,
  bgr8: PixelFormat.BGR8,
  rgba8: PixelFormat.RGBA8,
  gray8: PixelFormat.GRAY8,
};

/** The format named by an image's first bytes; UNSPECIFIED (the server sniffs) when it is none of ours. */
export function encodedFormatOf(bytes: Uint8Array): ImageFormat {
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return ImageFormat.JPEG;
  if (bytes.length >= 8 && bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47) return ImageFormat.PNG;
  const ascii = (from: number, to: number): string => String.fromCharCode(...bytes.subarray(from, to));
  if (bytes.length >= 12 && ascii(0, 4) === "RIFF" && ascii(8, 12) === "WEBP") return ImageFormat.WEBP;
  return ImageFormat.UNSPECIFIED;
}

/** The Frame message of a FrameInput; `defaultId` is used when the input has no id. */
export function toFrameMessage(input: FrameInput, defaultId: bigint): MessageInitShape<typeof FrameSchema> {
  const frameId = input.id === undefined ? defaultId : BigInt(input.id);
  const ptsUs = typeof input.ptsUs === "bigint" ? input.ptsUs : BigInt(Math.round(input.ptsUs ?? 0));
  const personBoxes = (input.personBoxes ?? []).map((box) => ({ x: box.x, y: box.y, width: box.width, height: box.height }));
  if (input.raw !== undefined) {
    const { width, height, data } = input.raw;
    if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
      throw new AppError(Code.INVALID_ARGUMENT, `frame ${frameId}: raw image size ${width}x${height} is invalid`);
    }
    return {
      frameId,
      ptsUs,
      personBoxes,
      image: {
        case: "raw",
        value: { width, height, data, format: PIXEL_FORMATS[input.raw.format ?? "rgb8"], stride: input.raw.stride ?? 0 },
      },
    };
  }
  if (input.encoded !== undefined) {
    return { frameId, ptsUs, personBoxes, image: { case: "encoded", value: { data: input.encoded, format: encodedFormatOf(input.encoded) } } };
  }
  throw new AppError(Code.INVALID_ARGUMENT, `frame ${frameId} has neither raw pixels nor encoded bytes`);
}
