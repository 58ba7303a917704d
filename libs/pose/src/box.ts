import { requireAllFinite, requireFinite, requirePositive } from "./argument-checks.js";

/** An axis-aligned box in pixels: (x, y) is the top-left corner (the field names of the proto's BoundingBox). */
export interface Box {
  readonly x: number;
  readonly y: number;
  readonly width: number;
  readonly height: number;
}

/** A raster size in pixels, e.g. a model's input (192 x 256) or its heatmaps (48 x 64). */
export interface Size {
  readonly width: number;
  readonly height: number;
}

/** Throws a RangeError unless the box is finite with a positive width and height. */
export function checkBox(box: Box, what = "box"): void {
  requireFinite(box.x, `${what}.x`);
  requireFinite(box.y, `${what}.y`);
  requirePositive(box.width, `${what}.width`);
  requirePositive(box.height, `${what}.height`);
}

/** Throws a RangeError unless both sides are positive integers. */
export function checkSize(size: Size, what: string): void {
  if (!(Number.isInteger(size.width) && size.width > 0 && Number.isInteger(size.height) && size.height > 0)) {
    throw new RangeError(`${what} must have positive integer width and height, got ${String(size.width)}x${String(size.height)}`);
  }
}

/** Intersection over union of two boxes; 0 when they do not overlap or both are empty. */
export function boxIou(a: Box, b: Box): number {
  const left = Math.max(a.x, b.x);
  const top = Math.max(a.y, b.y);
  const right = Math.min(a.x + a.width, b.x + b.width);
  const bottom = Math.min(a.y + a.height, b.y + b.height);
  const intersection = Math.max(0, right - left) * Math.max(0, bottom - top);
  const union = a.width * a.height + b.width * b.height - intersection;
  return union > 0 ? intersection / union : 0;
}

/**
 * The tightest box around keypoints stored with `stride` numbers each ([x, y] or [x, y, score]); with
 * `minScore`, only keypoints whose third number exceeds it count. Undefined when no keypoint counts.
 */
export function keypointsBox(keypoints: ArrayLike<number>, stride: 2 | 3 = 2, minScore?: number): Box | undefined {
  requireAllFinite(keypoints, "keypoints");
  let x0 = Infinity;
  let y0 = Infinity;
  let x1 = -Infinity;
  let y1 = -Infinity;
  for (let i = 0; i + stride - 1 < keypoints.length; i += stride) {
    if (minScore !== undefined && stride === 3 && !((keypoints[i + 2] as number) > minScore)) continue;
    const x = keypoints[i] as number;
    const y = keypoints[i + 1] as number;
    if (x < x0) x0 = x;
    if (x > x1) x1 = x;
    if (y < y0) y0 = y;
    if (y > y1) y1 = y;
  }
  return x0 <= x1 ? { x: x0, y: y0, width: x1 - x0, height: y1 - y0 } : undefined;
}
