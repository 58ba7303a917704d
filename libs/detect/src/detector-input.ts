import { ResizeMode, type DetectorSpec } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { AppError, Code } from "@poseloop/core";
import type { PersonDetection } from "./person-detection.js";

/**
 * Where a whole frame lands in a detector's input, and the way back. Box coordinates are continuous pixel
 * edges (a box [0, W] covers a W-pixel-wide image), so a box maps with a pure scale; `inverseAffine` samples
 * pixel centres (input pixel i sits at frame (i + 0.5) / scale − 0.5, as cv2.resize does) for warping the frame.
 */
export interface DetectorInputGeometry {
  /** Input pixels per frame pixel: the letterbox's single scale; for STRETCH, the smaller of the two. */
  readonly scale: number;
  readonly scaleX: number;
  readonly scaleY: number;
  /** Where the frame's top-left corner lands in the input: 0 for the top-left-aligned letterbox and STRETCH. */
  readonly padX: number;
  readonly padY: number;
  /** The input pixels the frame covers; the rest (right and bottom) is padding. */
  readonly contentWidth: number;
  readonly contentHeight: number;
  /** Input pixel → frame pixel, for warpToTensor (a, b, c, d, e, f: x' = a·x + b·y + c, y' = d·x + e·y + f). */
  readonly inverseAffine: readonly [number, number, number, number, number, number];
  /** A box in input pixels → the same box in frame pixels, clipped to the frame; the score is kept. */
  readonly toFrame: <T extends PersonDetection>(box: T) => T;
}

/**
 * The letterbox (or stretch) transform between a `frameWidth` x `frameHeight` frame and the detector's
 * `inputWidth` x `inputHeight` input: LETTERBOX (the default) scales the frame to fit keeping its aspect ratio,
 * top-left aligned, and pads the right and bottom with `spec.padValue`; STRETCH scales each axis on its own.
 */
export function detectorInput(
  frameWidth: number,
  frameHeight: number,
  spec: Pick<DetectorSpec, "resize">,
  inputWidth: number,
  inputHeight: number,
): DetectorInputGeometry {
  const problems: string[] = [];
  for (const [what, value] of [
    ["frame width", frameWidth],
    ["frame height", frameHeight],
    ["input width", inputWidth],
    ["input height", inputHeight],
  ] as const) {
    if (!(Number.isInteger(value) && value > 0)) problems.push(`${what} must be a positive integer, got ${String(value)}`);
  }
  if (problems.length > 0) throw AppError.invalid("detector input geometry", problems);

  let scaleX = inputWidth / frameWidth;
  let scaleY = inputHeight / frameHeight;
  if (spec.resize !== ResizeMode.STRETCH) {
    const scale = Math.min(scaleX, scaleY);
    scaleX = scale;
    scaleY = scale;
  }
  if (spec.resize !== ResizeMode.STRETCH && spec.resize !== ResizeMode.LETTERBOX && spec.resize !== ResizeMode.UNSPECIFIED) {
    throw new AppError(Code.INVALID_ARGUMENT, `unknown detector resize mode ${String(spec.resize)}`);
  }
  const contentWidth = Math.min(inputWidth, Math.round(frameWidth * scaleX));
  const contentHeight = Math.min(inputHeight, Math.round(frameHeight * scaleY));
  const toFrame = <T extends PersonDetection>(box: T): T => ({
    ...box,
    x1: clamp(box.x1 / scaleX, frameWidth),
    y1: clamp(box.y1 / scaleY, frameHeight),
    x2: clamp(box.x2 / scaleX, frameWidth),
    y2: clamp(box.y2 / scaleY, frameHeight),
  });
  return {
    scale: Math.min(scaleX, scaleY),
    scaleX,
    scaleY,
    padX: 0,
    padY: 0,
    contentWidth,
    contentHeight,
    inverseAffine: [1 / scaleX, 0, 0.5 / scaleX - 0.5, 0, 1 / scaleY, 0.5 / scaleY - 0.5],
    toFrame,
  };
}

function clamp(value: number, max: number): number {
  return value < 0 ? 0 : value > max ? max : value;
}
