import { boxToCropRegion, composeAffine, cropAffine, invertAffine, type Affine2D, type Box, type CropRegion } from "@poseloop/pose";
import type { RgbImage } from "./rgb-image.js";
import { warpToTensor, type TensorNormalization } from "./warp-to-tensor.js";

/** How a top-down model wants its person crops. */
export interface CropSpec {
  readonly inputWidth: number;
  readonly inputHeight: number;
  readonly normalization: TensorNormalization;
  /** Crops for a UDP codec map pixel centres (see cropAffine). */
  readonly udp: boolean;
  /** Context around the box; default 1.25, as at training. */
  readonly padding?: number;
}

/**
 * Writes the crop of one person box into an NCHW tensor at `offset` — the same region, affine and warp the
 * training loader's validation path uses, so served keypoints and evaluated keypoints come from one pipeline.
 * `flip` mirrors the crop (x' = W − 1 − x) for the flip test. Returns the region and the crop-to-frame map.
 */
export function cropPerson(image: RgbImage, box: Box, spec: CropSpec, out: Float32Array, offset: number, flip = false): { region: CropRegion; cropToFrame: Affine2D } {
  const size = { width: spec.inputWidth, height: spec.inputHeight };
  const region = boxToCropRegion(box, size, spec.padding === undefined ? {} : { padding: spec.padding });
  let toCrop = cropAffine(region, size, { udp: spec.udp });
  if (flip) toCrop = composeAffine([-1, 0, spec.inputWidth - 1, 0, 1, 0], toCrop);
  const cropToFrame = invertAffine(toCrop);
  warpToTensor(image, cropToFrame, spec.inputWidth, spec.inputHeight, spec.normalization, out, offset);
  return { region, cropToFrame: flip ? invertAffine(cropAffine(region, size, { udp: spec.udp })) : cropToFrame };
}
