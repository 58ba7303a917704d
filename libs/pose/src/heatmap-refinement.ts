// Sub-pixel refinement of a heatmap maximum found at the integer pixel (x, y). Each function returns the
// refined position in heatmap pixels through `out` = [x, y]. The DARK variants read `block`, the modulated
// heatmap's 5 × 5 neighbourhood of (x, y) (see `blurredNeighbourhood`).

import { NEIGHBOURHOOD_SIDE } from "./gaussian-modulation.js";

/**
 * The MSRA / SimpleBaseline decoder: a quarter pixel toward the higher neighbour on each axis, with
 * mmpose's `refine_keypoints` border conditions (no shift on an axis whose neighbours are not both inside).
 */
export function refineQuarterOffset(
  heatmaps: Float32Array,
  offset: number,
  width: number,
  height: number,
  x: number,
  y: number,
  out: Float64Array,
): void {
  const row = offset + y * width;
  let dx = 0;
  let dy = 0;
  if (x > 1 && x < width - 1 && y > 0 && y < height) dx = (heatmaps[row + x + 1] as number) - (heatmaps[row + x - 1] as number);
  if (y > 1 && y < height - 1 && x > 0 && x < width) dy = (heatmaps[row + width + x] as number) - (heatmaps[row - width + x] as number);
  out[0] = x + Math.sign(dx) * 0.25;
  out[1] = y + Math.sign(dy) * 0.25;
}

/** Whether DARK refines a maximum at (x, y): mmpose skips maxima within two pixels of the border. */
export function darkRefines(width: number, height: number, x: number, y: number): boolean {
  return x > 1 && x < width - 2 && y > 1 && y < height - 2;
}

const at = (block: Float64Array, dx: number, dy: number): number => block[(dy + 2) * NEIGHBOURHOOD_SIDE + dx + 2] as number;

/**
 * DARK (Zhang et al. 2020): one Newton step on the log of the modulated heatmap (clamped at 1e-10), with
 * derivatives over two-pixel spans as mmpose's `refine_keypoints_dark`; skipped near the border (see
 * `darkRefines`) or when the Hessian is singular.
 */
export function refineDark(block: Float64Array, width: number, height: number, x: number, y: number, out: Float64Array): void {
  out[0] = x;
  out[1] = y;
  if (!darkRefines(width, height, x, y)) return;
  const log = (dx: number, dy: number): number => Math.log(Math.max(at(block, dx, dy), 1e-10));
  const center = log(0, 0);
  const gx = 0.5 * (log(1, 0) - log(-1, 0));
  const gy = 0.5 * (log(0, 1) - log(0, -1));
  const dxx = 0.25 * (log(2, 0) - 2 * center + log(-2, 0));
  const dxy = 0.25 * (log(1, 1) - log(1, -1) - log(-1, 1) + log(-1, -1));
  const dyy = 0.25 * (log(0, 2) - 2 * center + log(0, -2));
  const det = dxx * dyy - dxy * dxy;
  if (det === 0 || !Number.isFinite(det)) return;
  // offset = −H⁻¹ ∇, with H⁻¹ = [[dyy, −dxy], [−dxy, dxx]] / det.
  out[0] = x - (dyy * gx - dxy * gy) / det;
  out[1] = y - (-dxy * gx + dxx * gy) / det;
}

// numpy's float32 machine epsilon, which mmpose adds to the Hessian's diagonal.
const FLOAT32_EPSILON = 1.1920928955078125e-7;

/**
 * DARK as the UDP codec does it (mmpose's `refine_keypoints_dark_udp`): the modulated heatmap is clipped to
 * [1e-3, 50] before the log, the border extended by edge replication (already in `block`), derivatives span
 * one pixel, and the Hessian gets ε on its diagonal instead of a singularity check.
 */
export function refineDarkUdp(block: Float64Array, x: number, y: number, out: Float64Array): void {
  const log = (dx: number, dy: number): number => {
    const v = at(block, dx, dy);
    return Math.log(v < 1e-3 ? 1e-3 : v > 50 ? 50 : v);
  };
  const i0 = log(0, 0);
  const ix1 = log(1, 0);
  const iy1 = log(0, 1);
  const ix1y1 = log(1, 1);
  const ix1_y1_ = log(-1, -1);
  const ix1_ = log(-1, 0);
  const iy1_ = log(0, -1);
  const gx = 0.5 * (ix1 - ix1_);
  const gy = 0.5 * (iy1 - iy1_);
  const dxx = ix1 - 2 * i0 + ix1_ + FLOAT32_EPSILON;
  const dyy = iy1 - 2 * i0 + iy1_ + FLOAT32_EPSILON;
  const dxy = 0.5 * (ix1y1 - ix1 - iy1 + i0 + i0 - ix1_ - iy1_ + ix1_y1_);
  const det = dxx * dyy - dxy * dxy;
  out[0] = x;
  out[1] = y;
  if (det === 0 || !Number.isFinite(det)) return;
  out[0] = x - (dyy * gx - dxy * gy) / det;
  out[1] = y - (-dxy * gx + dxx * gy) / det;
}
