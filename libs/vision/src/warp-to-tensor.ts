import type { Affine2D } from "@poseloop/pose";
import { AppError, Code } from "@poseloop/core";
import { assertRgbImage, type RgbImage } from "./rgb-image.js";

/** Per-channel normalization applied to the warped pixels: value = (pixel − mean) / std, on the 0–255 scale. */
export interface TensorNormalization {
  /** Mean per channel in RGB order (whatever `channelOrder` is), e.g. ImageNet's [123.675, 116.28, 103.53]. */
  readonly mean: readonly [number, number, number];
  /** Standard deviation per channel in RGB order, e.g. ImageNet's [58.395, 57.12, 57.375]. */
  readonly std: readonly [number, number, number];
  /** Order of the three planes in the tensor: "RGB" (plane 0 is red) or "BGR" (plane 0 is blue, as OpenCV-trained models expect). */
  readonly channelOrder: "RGB" | "BGR";
}

/** ImageNet statistics on the 0–255 scale, RGB planes: what torchvision-style backbones are trained with. */
export const IMAGENET_NORMALIZATION: TensorNormalization = Object.freeze({
  mean: Object.freeze([123.675, 116.28, 103.53] as const),
  std: Object.freeze([58.395, 57.12, 57.375] as const),
  channelOrder: "RGB" as const,
});

/**
 * Warps a crop of `image` straight into one CHW float32 tensor slot: for each output pixel (x, y) the source
 * point is `inverseAffine`·(x, y) (the map from output to source, as OpenCV's warpAffine with WARP_INVERSE_MAP),
 * sampled bilinearly, then normalized. Planes are written at out[outOffset + c·H·W + y·W + x].
 *
 * Coordinates are pixel indices: pixel (i, j) is the sample at (i, j), as in OpenCV. Source pixels outside the
 * image count as 0 before normalization (cv2.BORDER_CONSTANT with 0), so the border of a crop fades to black
 * over one pixel and areas beyond it hold (0 − mean) / std. Unlike cv2, the sample position is not rounded to
 * 1/32 pixel. A horizontal flip is part of the affine: compose the crop with x' = (W − 1) − x.
 */
export function warpToTensor(
  image: RgbImage,
  inverseAffine: Affine2D,
  outWidth: number,
  outHeight: number,
  normalization: TensorNormalization,
  out: Float32Array,
  outOffset = 0,
): void {
  assertRgbImage(image);
  if (!Number.isInteger(outWidth) || !Number.isInteger(outHeight) || outWidth <= 0 || outHeight <= 0) {
    throw new AppError(Code.INVALID_ARGUMENT, `warp output size ${outWidth}x${outHeight} must be positive integers`);
  }
  const plane = outWidth * outHeight;
  if (!Number.isInteger(outOffset) || outOffset < 0 || outOffset + 3 * plane > out.length) {
    throw new AppError(
      Code.INVALID_ARGUMENT,
      `a 3x${outHeight}x${outWidth} tensor at offset ${outOffset} does not fit an output of ${out.length} floats`,
    );
  }
  if (!inverseAffine.every(Number.isFinite)) throw new AppError(Code.INVALID_ARGUMENT, "the warp affine has non-finite entries");
  const { mean, std, channelOrder } = normalization;
  if (!std.every((s) => Number.isFinite(s) && s !== 0) || !mean.every(Number.isFinite)) {
    throw new AppError(Code.INVALID_ARGUMENT, "normalization mean must be finite and std finite and non-zero");
  }

  // Fold (v − mean)/std into v·scale + bias, and the channel order into plane offsets, once per call.
  const scaleR = 1 / std[0];
  const scaleG = 1 / std[1];
  const scaleB = 1 / std[2];
  const biasR = -mean[0] * scaleR;
  const biasG = -mean[1] * scaleG;
  const biasB = -mean[2] * scaleB;
  const planeR = outOffset + (channelOrder === "BGR" ? 2 * plane : 0);
  const planeG = outOffset + plane;
  const planeB = outOffset + (channelOrder === "BGR" ? 0 : 2 * plane);

  const src = image.data;
  const width = image.width;
  const height = image.height;
  const rowBytes = width * 3;
  const [a, b, c, d, e, f] = inverseAffine;

  const maxX = width - 1;
  const maxY = height - 1;
  for (let y = 0; y < outHeight; y++) {
    // The source point moves by (a, d) per output column: one add per pixel instead of a matrix product.
    let sx = b * y + c;
    let sy = e * y + f;
    let o = y * outWidth;
    for (let x = 0; x < outWidth; x++, o++, sx += a, sy += d) {
      let r = 0;
      let g = 0;
      let bl = 0;
      if (sx >= 0 && sy >= 0 && sx < maxX && sy < maxY) {
        // All four neighbours inside, the common case: truncation is floor here, and int32 indices keep
        // the typed-array loads on V8's fast path.
        const x0 = sx | 0;
        const y0 = sy | 0;
        const wx = sx - x0;
        const wy = sy - y0;
        const i00 = (y0 * rowBytes + x0 * 3) | 0;
        const i10 = (i00 + rowBytes) | 0;
        let top = src[i00]!;
        let bottom = src[i10]!;
        top += wx * (src[i00 + 3]! - top);
        bottom += wx * (src[i10 + 3]! - bottom);
        r = top + wy * (bottom - top);
        top = src[i00 + 1]!;
        bottom = src[i10 + 1]!;
        top += wx * (src[i00 + 4]! - top);
        bottom += wx * (src[i10 + 4]! - bottom);
        g = top + wy * (bottom - top);
        top = src[i00 + 2]!;
        bottom = src[i10 + 2]!;
        top += wx * (src[i00 + 5]! - top);
        bottom += wx * (src[i10 + 5]! - bottom);
        bl = top + wy * (bottom - top);
      } else if (sx > -1 && sy > -1 && sx < width && sy < height) {
        // On the border: neighbours outside the image contribute 0.
        const x0 = Math.floor(sx);
        const y0 = Math.floor(sy);
        const wx = sx - x0;
        const wy = sy - y0;
        for (let k = 0; k < 4; k++) {
          const px = x0 + (k & 1);
          const py = y0 + (k >> 1);
          if (px < 0 || py < 0 || px >= width || py >= height) continue;
          const w = ((k & 1) === 1 ? wx : 1 - wx) * ((k >> 1) === 1 ? wy : 1 - wy);
          const i = py * rowBytes + px * 3;
          r += w * src[i]!;
          g += w * src[i + 1]!;
          bl += w * src[i + 2]!;
        }
      }
      out[planeR + o] = r * scaleR + biasR;
      out[planeG + o] = g * scaleG + biasG;
      out[planeB + o] = bl * scaleB + biasB;
    }
  }
}
