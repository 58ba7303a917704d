import { applyAffineToPoints, invertAffine, type Affine2D } from "./affine.js";
import { requireFinite, requirePositive } from "./argument-checks.js";
import { checkBox, checkSize, type Box, type Size } from "./box.js";

/**
 * The frame region a top-down model sees: a rectangle of `scale` = [width, height] frame pixels centred on
 * `center`, turned by `rotation` degrees.
 *
 * `scale` is in pixels, not in the HRNet reference's units of 200 pixels (`pixel_std`): our scale equals the
 * reference's `scale * 200`. Pixels need no magic constant and read directly as the crop's size.
 */
export interface CropRegion {
  readonly center: readonly [number, number];
  readonly scale: readonly [number, number];
  /** Degrees; positive turns the region clockwise in the frame (y down), so the person appears turned anticlockwise in the crop. */
  readonly rotation: number;
}

export interface CropRegionOptions {
  /** Context added around the person box: both sides are multiplied by it. Default 1.25, as HRNet and mmpose. */
  readonly padding?: number;
}

export interface CropAffineOptions {
  /**
   * Unbiased data processing (UDP): map the region onto the pixel centres 0 … size − 1 instead of the
   * edges 0 … size. Required by the UDP heatmap codec (its `udp` flag says so). Default false.
   */
  readonly udp?: boolean;
}

/**
 * The crop region of a person box for a model whose input is `inputSize`: the box's centre, its short side
 * expanded until the box has the input's aspect ratio (width / height), then both sides times `padding`, as
 * HRNet's `_xywh2cs` and mmpose's `bbox_xywh2cs` + `_fix_aspect_ratio` do.
 *
 * Throws a RangeError for a NaN or zero-size box, or a non-positive padding.
 */
export function boxToCropRegion(box: Box, inputSize: Size, options: CropRegionOptions = {}): CropRegion {
  checkBox(box);
  checkSize(inputSize, "inputSize");
  const padding = options.padding ?? 1.25;
  requirePositive(padding, "padding");
  const aspectRatio = inputSize.width / inputSize.height;
  let width = box.width;
  let height = box.height;
  if (width > aspectRatio * height) height = width / aspectRatio;
  else if (width < aspectRatio * height) width = height * aspectRatio;
  return {
    center: [box.x + box.width * 0.5, box.y + box.height * 0.5],
    scale: [width * padding, height * padding],
    rotation: 0,
  };
}

function checkRegion(region: CropRegion): void {
  requireFinite(region.center[0], "region.center[0]");
  requireFinite(region.center[1], "region.center[1]");
  requirePositive(region.scale[0], "region.scale[0]");
  requirePositive(region.scale[1], "region.scale[1]");
  requireFinite(region.rotation, "region.rotation");
}

/**
 * The affine map from frame pixels to the crop of `outputSize` pixels (the model input, or a heatmap).
 *
 * Default: HRNet's / mmpose's `get_affine_transform`: a similarity that sends the region's centre to the
 * output's centre (w/2, h/2) and scales by output width / region width (the region's height follows from its
 * aspect ratio, which `boxToCropRegion` makes equal to the output's).
 *
 * `udp`: mmpose's `get_udp_warp_matrix`: the region's extent maps onto 0 … size − 1 on each axis, its centre
 * onto ((w − 1)/2, (h − 1)/2). mmpose turns that matrix the opposite way for the same angle; here one angle
 * means the same turn for both, so a rotation augmentation does not depend on the codec.
 */
export function cropAffine(region: CropRegion, outputSize: Size, options: CropAffineOptions = {}): Affine2D {
  checkRegion(region);
  checkSize(outputSize, "outputSize");
  const radians = (region.rotation * Math.PI) / 180;
  const cos = Math.cos(radians);
  const sin = Math.sin(radians);
  const [cx, cy] = region.center;
  let sx: number;
  let sy: number;
  let ox: number;
  let oy: number;
  if (options.udp === true) {
    sx = (outputSize.width - 1) / region.scale[0];
    sy = (outputSize.height - 1) / region.scale[1];
    ox = (outputSize.width - 1) * 0.5;
    oy = (outputSize.height - 1) * 0.5;
  } else {
    sx = outputSize.width / region.scale[0];
    sy = sx;
    ox = outputSize.width * 0.5;
    oy = outputSize.height * 0.5;
  }
  // Linear part diag(sx, sy) · R(−rotation); the translation sends the centre to (ox, oy).
  const a = sx * cos;
  const b = sx * sin;
  const d = -sy * sin;
  const e = sy * cos;
  return [a, b, ox - (a * cx + b * cy), d, e, oy - (d * cx + e * cy)];
}

/** The inverse of `cropAffine`: crop (model-input) pixels back to frame pixels. */
export function cropInverseAffine(region: CropRegion, outputSize: Size, options: CropAffineOptions = {}): Affine2D {
  return invertAffine(cropAffine(region, outputSize, options));
}

/**
 * Maps decoded keypoints [x0, y0, x1, y1, ...] from model-input pixels to frame pixels, into `out` (a new
 * array by default; may be `keypoints` itself).
 */
export function keypointsToFrame(
  keypoints: Float32Array,
  region: CropRegion,
  inputSize: Size,
  options: CropAffineOptions = {},
  out: Float32Array = new Float32Array(keypoints.length),
): Float32Array {
  applyAffineToPoints(cropInverseAffine(region, inputSize, options), keypoints, out);
  return out;
}
