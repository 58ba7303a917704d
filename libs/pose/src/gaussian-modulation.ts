import { requirePositiveInteger } from "./argument-checks.js";

// OpenCV's fixed kernels for the small sizes when sigma is left to it (getGaussianKernel with sigma <= 0):
// cv2.GaussianBlur(..., (k, k), 0), which mmpose's DARK modulation calls, uses these instead of sampling.
const SMALL_KERNELS: Readonly<Record<number, readonly number[]>> = {
  1: [1],
  3: [0.25, 0.5, 0.25],
  5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
  7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125],
};

/**
 * The 1-D Gaussian kernel of an odd `size` as OpenCV derives it when no sigma is given:
 * sigma = 0.3·((size − 1)·0.5 − 1) + 0.8 (11 → 2.0, 17 → 2.9), normalised to sum 1.
 */
export function gaussianBlurKernel(size: number): Float64Array {
  requirePositiveInteger(size, "blur kernel size");
  if (size % 2 !== 1) throw new RangeError(`blur kernel size must be odd, got ${size}`);
  const small = SMALL_KERNELS[size];
  if (small !== undefined) return Float64Array.from(small);
  const sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8;
  const kernel = new Float64Array(size);
  const half = (size - 1) / 2;
  let sum = 0;
  for (let i = 0; i < size; i++) {
    const v = Math.exp(-((i - half) ** 2) / (2 * sigma * sigma));
    kernel[i] = v;
    sum += v;
  }
  for (let i = 0; i < size; i++) kernel[i] = (kernel[i] as number) / sum;
  return kernel;
}

/**
 * DARK's "distribution modulation": blurs one heatmap plane with `kernel` (zero outside the plane, as
 * mmpose's zero-padded cv2.GaussianBlur) into `out`, then rescales it so its maximum equals the plane's
 * original maximum. `scratch` holds the horizontal pass (width × height values).
 */
export function modulateHeatmap(
  heatmaps: Float32Array,
  offset: number,
  width: number,
  height: number,
  kernel: Float64Array,
  out: Float64Array,
  scratch: Float64Array,
): void {
  const radius = (kernel.length - 1) >> 1;
  let originalMax = -Infinity;
  for (let y = 0; y < height; y++) {
    const row = offset + y * width;
    for (let x = 0; x < width; x++) {
      const from = Math.max(-radius, -x);
      const to = Math.min(radius, width - 1 - x);
      let sum = 0;
      for (let t = from; t <= to; t++) sum += (kernel[t + radius] as number) * (heatmaps[row + x + t] as number);
      scratch[y * width + x] = sum;
      const v = heatmaps[row + x] as number;
      if (v > originalMax) originalMax = v;
    }
  }
  let blurredMax = -Infinity;
  for (let y = 0; y < height; y++) {
    const from = Math.max(-radius, -y);
    const to = Math.min(radius, height - 1 - y);
    for (let x = 0; x < width; x++) {
      let sum = 0;
      for (let t = from; t <= to; t++) sum += (kernel[t + radius] as number) * (scratch[(y + t) * width + x] as number);
      out[y * width + x] = sum;
      if (sum > blurredMax) blurredMax = sum;
    }
  }
  // A plane that is zero everywhere stays zero rather than turning into NaN.
  if (blurredMax > 0) {
    const factor = originalMax / blurredMax;
    for (let i = 0; i < width * height; i++) out[i] = (out[i] as number) * factor;
  }
}

/** Side of the neighbourhood DARK reads around a maximum: offsets −2 … 2 on each axis. */
export const NEIGHBOURHOOD_SIDE = 5;

/**
 * The blurred (not yet rescaled) values of the 5 × 5 neighbourhood of (x, y) into `block`, row-major;
 * positions outside the plane take the nearest inside position's value (edge replication, which UDP's
 * refinement wants and DARK's never reaches). Costs 25 × kernel² products instead of blurring the plane.
 */
export function blurredNeighbourhood(
  heatmaps: Float32Array,
  offset: number,
  width: number,
  height: number,
  kernel: Float64Array,
  x: number,
  y: number,
  block: Float64Array,
): void {
  const radius = (kernel.length - 1) >> 1;
  for (let dy = -2; dy <= 2; dy++) {
    const py = Math.min(height - 1, Math.max(0, y + dy));
    for (let dx = -2; dx <= 2; dx++) {
      const px = Math.min(width - 1, Math.max(0, x + dx));
      let sum = 0;
      for (let ty = Math.max(-radius, -py); ty <= Math.min(radius, height - 1 - py); ty++) {
        const row = offset + (py + ty) * width;
        const ky = kernel[ty + radius] as number;
        let rowSum = 0;
        for (let tx = Math.max(-radius, -px); tx <= Math.min(radius, width - 1 - px); tx++) rowSum += (kernel[tx + radius] as number) * (heatmaps[row + px + tx] as number);
        sum += ky * rowSum;
      }
      block[(dy + 2) * NEIGHBOURHOOD_SIDE + dx + 2] = sum;
    }
  }
}

/** The 5 × 5 neighbourhood of (x, y) read from a modulated plane, with the same edge replication. */
export function neighbourhoodOf(plane: Float64Array, width: number, height: number, x: number, y: number, block: Float64Array): void {
  for (let dy = -2; dy <= 2; dy++) {
    const py = Math.min(height - 1, Math.max(0, y + dy));
    for (let dx = -2; dx <= 2; dx++) {
      const px = Math.min(width - 1, Math.max(0, x + dx));
      block[(dy + 2) * NEIGHBOURHOOD_SIDE + dx + 2] = plane[py * width + px] as number;
    }
  }
}
