import { create } from "@bufbuild/protobuf";
import { PersonSchema, type Person } from "@poseloop/proto/poseloop/common/v1/pose_pb";
import { AppError, Code } from "@poseloop/core";
import type { Box } from "@poseloop/pose";
import { ImageFormat, PixelFormat, type Frame } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import type { InferenceLimits } from "./config.js";
import type { FrameImage, FrameJob, PersonEstimate } from "@poseloop/estimator";
import type { PersonSourceSettings } from "./person-source.js";

const PIXEL_FORMATS: Readonly<Partial<Record<PixelFormat, { name: "RGB8" | "BGR8" | "RGBA8" | "GRAY8"; bytes: number }>>> = {
  [PixelFormat.RGB8]: { name: "RGB8", bytes: 3 },
  [PixelFormat.BGR8]: { name: "BGR8", bytes: 3 },
  [PixelFormat.RGBA8]: { name: "RGBA8", bytes: 4 },
  [PixelFormat.GRAY8]: { name: "GRAY8", bytes: 1 },
};

/** Box corners are at most this far from the frame's origin, in pixels (no decodable image is wider). */
export const MAX_BOX_COORDINATE = 1 << 20;

const IMAGE_FORMAT_NAMES: Readonly<Partial<Record<ImageFormat, string>>> = {
  [ImageFormat.JPEG]: "JPEG",
  [ImageFormat.PNG]: "PNG",
  [ImageFormat.WEBP]: "WebP",
};

/** The format an image's first bytes announce (magic numbers), or undefined when none of ours. */
export function sniffImageFormat(bytes: Uint8Array): ImageFormat | undefined {
  const starts = (offset: number, ...magic: number[]): boolean => bytes.length >= offset + magic.length && magic.every((b, i) => bytes[offset + i] === b);
  if (starts(0, 0xff, 0xd8, 0xff)) return ImageFormat.JPEG;
  if (starts(0, 0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a)) return ImageFormat.PNG;
  if (starts(0, 0x52, 0x49, 0x46, 0x46) && starts(8, 0x57, 0x45, 0x42, 0x50)) return ImageFormat.WEBP;
  return undefined;
}

/** A declared format must be ours and match the bytes, so the decoder never guesses past what the client said. */
function checkDeclaredFormat(frameId: bigint, declared: ImageFormat, data: Uint8Array): void {
  if (declared === ImageFormat.UNSPECIFIED) return;
  const name = IMAGE_FORMAT_NAMES[declared];
  if (name === undefined) throw new AppError(Code.INVALID_ARGUMENT, `frame ${frameId}: unknown image format ${declared}`);
  const actual = sniffImageFormat(data);
  if (actual !== declared) {
    const found = actual === undefined ? "none of JPEG, PNG or WebP" : (IMAGE_FORMAT_NAMES[actual] as string);
    throw new AppError(Code.INVALID_ARGUMENT, `frame ${frameId}: declared ${name}, but the bytes are ${found}`);
  }
}

export interface FrameSettings {
  readonly flipTest: boolean;
  readonly minKeypointScore: number;
  readonly maxPersons: number;
  /** Measure each frame's colour histogram, for a stream's scene-cut test. */
  readonly histogram?: boolean;
  /** Where the frame's people come from and the detector's thresholds; absent: AUTO_PERSON_SOURCE. */
  readonly people?: PersonSourceSettings;
}

/**
 * The worker job for a frame, after the checks that need no decoding: an image is present, within the byte
 * limit, raw pixels agree with their size, boxes are finite and non-empty. Throws INVALID_ARGUMENT naming the
 * problem; the frame then fails alone.
 */
export function frameJob(frame: Frame, settings: FrameSettings, limits: InferenceLimits): FrameJob {
  let image: FrameImage;
  switch (frame.image.case) {
    case "encoded": {
      const data = frame.image.value.data;
      if (data.byteLength === 0) throw new AppError(Code.INVALID_ARGUMENT, `frame ${frame.frameId}: the encoded image is empty`);
      if (data.byteLength > limits.maxFrameBytes) throw new AppError(Code.INVALID_ARGUMENT, `frame ${frame.frameId}: ${data.byteLength} bytes is above the limit of ${limits.maxFrameBytes}`);
      checkDeclaredFormat(frame.frameId, frame.image.value.format, data);
      // Copied: the gRPC receive buffer must not move to another thread.
      image = { kind: "encoded", data: Uint8Array.from(data) };
      break;
    }
    case "raw": {
      const raw = frame.image.value;
      const format = PIXEL_FORMATS[raw.format];
      if (format === undefined) throw new AppError(Code.INVALID_ARGUMENT, `frame ${frame.frameId}: unknown pixel format ${raw.format}`);
      if (raw.width === 0 || raw.height === 0) throw new AppError(Code.INVALID_ARGUMENT, `frame ${frame.frameId}: raw image of ${raw.width}x${raw.height} pixels`);
      if (raw.width * raw.height > limits.maxFramePixels) throw new AppError(Code.INVALID_ARGUMENT, `frame ${frame.frameId}: ${raw.width}x${raw.height} is above the limit of ${limits.maxFramePixels} pixels`);
      const stride = raw.stride === 0 ? raw.width * format.bytes : raw.stride;
      if (stride < raw.width * format.bytes) throw new AppError(Code.INVALID_ARGUMENT, `frame ${frame.frameId}: stride ${stride} is shorter than a row of ${raw.width * format.bytes} bytes`);
      const needed = stride * (raw.height - 1) + raw.width * format.bytes;
      if (raw.data.byteLength < needed) throw new AppError(Code.INVALID_ARGUMENT, `frame ${frame.frameId}: ${raw.data.byteLength} bytes of pixels, ${raw.width}x${raw.height} ${format.name} with stride ${stride} needs ${needed}`);
      if (raw.data.byteLength > limits.maxFrameBytes) throw new AppError(Code.INVALID_ARGUMENT, `frame ${frame.frameId}: ${raw.data.byteLength} bytes is above the limit of ${limits.maxFrameBytes}`);
      image = { kind: "raw", width: raw.width, height: raw.height, format: format.name, stride, data: Uint8Array.from(raw.data) };
      break;
    }
    default:
      throw new AppError(Code.INVALID_ARGUMENT, `frame ${frame.frameId} carries no image`);
  }
  if (frame.personBoxes.length > limits.maxBoxesPerFrame) throw new AppError(Code.INVALID_ARGUMENT, `frame ${frame.frameId}: ${frame.personBoxes.length} person boxes, at most ${limits.maxBoxesPerFrame}`);
  const boxes: Box[] = frame.personBoxes.map((b, i) => {
    const box = `frame ${frame.frameId}: person box ${i} (${b.x}, ${b.y}, ${b.width}x${b.height})`;
    if (![b.x, b.y, b.width, b.height].every(Number.isFinite) || !(b.width > 0) || !(b.height > 0)) {
      throw new AppError(Code.INVALID_ARGUMENT, `${box} is empty or not finite`);
    }
    // Far beyond any frame the crop's scale underflows and the worker could only say "invalid argument".
    if (![b.x, b.y, b.x + b.width, b.y + b.height].every((v) => Math.abs(v) <= MAX_BOX_COORDINATE)) {
      throw new AppError(Code.INVALID_ARGUMENT, `${box} reaches beyond ±${MAX_BOX_COORDINATE} pixels; boxes are in frame pixels`);
    }
    return { x: b.x, y: b.y, width: b.width, height: b.height };
  });
  return { image, boxes, flipTest: settings.flipTest, minKeypointScore: settings.minKeypointScore, maxPersons: settings.maxPersons, ...(settings.histogram === true ? { histogram: true } : {}) };
}

/** The persons of a FrameResult from worker estimates (optionally with track ids). */
export function personsInit(persons: readonly PersonEstimate[], trackIds?: readonly number[]): Person[] {
  return persons.map((person, i) => {
    const keypoints = [];
    for (let k = 0; k < person.keypoints.length / 3; k++) {
      keypoints.push({ x: person.keypoints[3 * k] as number, y: person.keypoints[3 * k + 1] as number, score: person.keypoints[3 * k + 2] as number });
    }
    const trackId = trackIds?.[i];
    // A detected person's box carries the detector's score; a client's or the whole frame's has none (0).
    const boxScore = (person.bbox as { readonly score?: number }).score ?? 0;
    return create(PersonSchema, { bbox: { x: person.bbox.x, y: person.bbox.y, width: person.bbox.width, height: person.bbox.height, score: boxScore }, score: person.score, keypoints, ...(trackId === undefined ? {} : { trackId }) });
  });
}
