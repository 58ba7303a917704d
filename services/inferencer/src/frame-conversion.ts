import { create } from "@bufbuild/protobuf";
import { PersonSchema, type Person } from "@poseloop/proto/poseloop/common/v1/pose_pb";
import { AppError, Code } from "@poseloop/core";
import type { Box } from "@poseloop/pose";
import { PixelFormat, type Frame } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import type { InferenceLimits } from "./config.js";
import type { FrameImage, FrameJob, PersonEstimate } from "@poseloop/estimator";

const PIXEL_FORMATS: Readonly<Partial<Record<PixelFormat, { name: "RGB8" | "BGR8" | "RGBA8" | "GRAY8"; bytes: number }>>> = {
  [PixelFormat.RGB8]: { name: "RGB8", bytes: 3 },
  [PixelFormat.BGR8]: { name: "BGR8", bytes: 3 },
  [PixelFormat.RGBA8]: { name: "RGBA8", bytes: 4 },
  [PixelFormat.GRAY8]: { name: "GRAY8", bytes: 1 },
};

export interface FrameSettings {
  readonly flipTest: boolean;
  readonly minKeypointScore: number;
  readonly maxPersons: number;
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
    if (![b.x, b.y, b.width, b.height].every(Number.isFinite) || !(b.width > 0) || !(b.height > 0)) {
      throw new AppError(Code.INVALID_ARGUMENT, `frame ${frame.frameId}: person box ${i} (${b.x}, ${b.y}, ${b.width}x${b.height}) is empty or not finite`);
    }
    return { x: b.x, y: b.y, width: b.width, height: b.height };
  });
  return { image, boxes, flipTest: settings.flipTest, minKeypointScore: settings.minKeypointScore, maxPersons: settings.maxPersons };
}

/** The persons of a FrameResult from worker estimates (optionally with track ids). */
export function personsInit(persons: readonly PersonEstimate[], trackIds?: readonly number[]): Person[] {
  return persons.map((person, i) => {
    const keypoints = [];
    for (let k = 0; k < person.keypoints.length / 3; k++) {
      keypoints.push({ x: person.keypoints[3 * k] as number, y: person.keypoints[3 * k + 1] as number, score: person.keypoints[3 * k + 2] as number });
    }
    const trackId = trackIds?.[i];
    return create(PersonSchema, { bbox: { ...person.bbox, score: 0 }, score: person.score, keypoints, ...(trackId === undefined ? {} : { trackId }) });
  });
}
