import { requireMinLength } from "./argument-checks.js";

/** Layout of one instance's heatmaps: K planes of height × width, row-major. */
export interface HeatmapShape {
  readonly numKeypoints: number;
  readonly height: number;
  readonly width: number;
}

export interface FlipHeatmapsOptions {
  /**
   * Shift the mirrored heatmaps one pixel right, as HRNet and mmpose (`shift_heatmap`) do for the MSRA
   * codec: mirroring the crop sends input x to (w − 1) − x, i.e. heatmap column j to W − 1/stride − j, while
   * mirroring the plane sends it to W − 1 − j, nearly a pixel short. UDP's (size − 1) grid mirrors
   * exactly: no shift. Default true.
   */
  readonly shift?: boolean;
}

function checkPermutation(permutation: Int32Array, numKeypoints: number): void {
  if (permutation.length !== numKeypoints) throw new RangeError(`flip permutation must have ${numKeypoints} entries, got ${permutation.length}`);
  for (const target of permutation) {
    if (!(target >= 0 && target < numKeypoints)) throw new RangeError(`flip permutation entry ${target} is out of range`);
  }
}

/**
 * Maps the heatmaps predicted for a horizontally mirrored crop back onto the original crop: each plane is
 * mirrored left-right and takes the place of its flip partner (`permutation`, from `flipPermutation`).
 * Reads instance `index` of `flipped`; writes one instance into `out`.
 */
export function flipHeatmaps(
  flipped: Float32Array,
  shape: HeatmapShape,
  permutation: Int32Array,
  options: FlipHeatmapsOptions = {},
  index = 0,
  out: Float32Array = new Float32Array(shape.numKeypoints * shape.height * shape.width),
): Float32Array {
  const { numKeypoints, height, width } = shape;
  const planeSize = height * width;
  const base = index * numKeypoints * planeSize;
  requireMinLength(flipped, base + numKeypoints * planeSize, "flipped heatmaps");
  requireMinLength(out, numKeypoints * planeSize, "flip output");
  checkPermutation(permutation, numKeypoints);
  const shift = options.shift ?? true;
  for (let k = 0; k < numKeypoints; k++) {
    const source = base + (permutation[k] as number) * planeSize;
    const target = k * planeSize;
    for (let y = 0; y < height; y++) {
      const from = source + y * width;
      const to = target + y * width;
      // Mirrored column x reads source column (w − 1 − x); shifted, column x ≥ 1 reads (w − x) and column 0 keeps its own.
      if (shift) {
        out[to] = flipped[from + width - 1] as number;
        for (let x = 1; x < width; x++) out[to + x] = flipped[from + width - x] as number;
      } else {
        for (let x = 0; x < width; x++) out[to + x] = flipped[from + width - 1 - x] as number;
      }
    }
  }
  return out;
}

/** Layout of one instance's SimCC outputs: K vectors of `lengthX` bins and K of `lengthY`. */
export interface SimccShape {
  readonly numKeypoints: number;
  readonly lengthX: number;
  readonly lengthY: number;
}

/**
 * Maps SimCC vectors predicted for a mirrored crop back: x vectors reversed, and both swapped with their
 * flip partners, as mmpose's `flip_vectors` (which shifts nothing). Reads instance `index`; writes one
 * instance into `outX` and `outY`.
 */
export function flipSimccVectors(
  flippedX: Float32Array,
  flippedY: Float32Array,
  shape: SimccShape,
  permutation: Int32Array,
  index = 0,
  outX: Float32Array = new Float32Array(shape.numKeypoints * shape.lengthX),
  outY: Float32Array = new Float32Array(shape.numKeypoints * shape.lengthY),
): [Float32Array, Float32Array] {
  const { numKeypoints, lengthX, lengthY } = shape;
  requireMinLength(flippedX, (index + 1) * numKeypoints * lengthX, "flipped SimCC x");
  requireMinLength(flippedY, (index + 1) * numKeypoints * lengthY, "flipped SimCC y");
  requireMinLength(outX, numKeypoints * lengthX, "flip output x");
  requireMinLength(outY, numKeypoints * lengthY, "flip output y");
  checkPermutation(permutation, numKeypoints);
  const baseX = index * numKeypoints * lengthX;
  const baseY = index * numKeypoints * lengthY;
  for (let k = 0; k < numKeypoints; k++) {
    const partner = permutation[k] as number;
    const fromX = baseX + partner * lengthX;
    const toX = k * lengthX;
    for (let i = 0; i < lengthX; i++) outX[toX + i] = flippedX[fromX + lengthX - 1 - i] as number;
    outY.set(flippedY.subarray(baseY + partner * lengthY, baseY + (partner + 1) * lengthY), k * lengthY);
  }
  return [outX, outY];
}

/** The flip test's merge: the element-wise mean of the plain and the mapped-back outputs, into `out`. */
export function averageOutputs(plain: Float32Array, plainOffset: number, mappedBack: Float32Array, out: Float32Array): Float32Array {
  requireMinLength(plain, plainOffset + mappedBack.length, "plain outputs");
  requireMinLength(out, mappedBack.length, "merged outputs");
  for (let i = 0; i < mappedBack.length; i++) out[i] = ((plain[plainOffset + i] as number) + (mappedBack[i] as number)) * 0.5;
  return out;
}
