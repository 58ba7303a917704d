/**
 * A 2-D affine map as the six numbers [a, b, c, d, e, f] of
 *   x' = a·x + b·y + c
 *   y' = d·x + e·y + f
 * (the top two rows of the 3×3 matrix, row-major, like OpenCV's 2×3 warp matrices).
 */
export type Affine2D = readonly [number, number, number, number, number, number];

export const IDENTITY: Affine2D = [1, 0, 0, 0, 1, 0];

/** Maps the point (x, y). */
export function applyAffine(m: Affine2D, x: number, y: number): [number, number] {
  return [m[0] * x + m[1] * y + m[2], m[3] * x + m[4] * y + m[5]];
}

/** Maps K points stored as [x0, y0, x1, y1, ...] into `out` (which may be `points`). */
export function applyAffineToPoints(m: Affine2D, points: ArrayLike<number>, out: Float32Array | Float64Array | number[]): void {
  for (let i = 0; i + 1 < points.length; i += 2) {
    const x = points[i] as number;
    const y = points[i + 1] as number;
    out[i] = m[0] * x + m[1] * y + m[2];
    out[i + 1] = m[3] * x + m[4] * y + m[5];
  }
}

/** The inverse map; throws on a singular matrix. */
export function invertAffine(m: Affine2D): Affine2D {
  const det = m[0] * m[4] - m[1] * m[3];
  if (!Number.isFinite(det) || Math.abs(det) < 1e-12) throw new RangeError("affine matrix is singular");
  const a = m[4] / det;
  const b = -m[1] / det;
  const d = -m[3] / det;
  const e = m[0] / det;
  return [a, b, -(a * m[2] + b * m[5]), d, e, -(d * m[2] + e * m[5])];
}

/** The map that applies `first`, then `second`. */
export function composeAffine(second: Affine2D, first: Affine2D): Affine2D {
  return [
    second[0] * first[0] + second[1] * first[3],
    second[0] * first[1] + second[1] * first[4],
    second[0] * first[2] + second[1] * first[5] + second[2],
    second[3] * first[0] + second[4] * first[3],
    second[3] * first[1] + second[4] * first[4],
    second[3] * first[2] + second[4] * first[5] + second[5],
  ];
}
