/** An object box in model-input pixels (continuous edges: [x1, x2] spans x2 − x1 pixels), of a class. */
export interface TargetBox {
  readonly x1: number;
  readonly y1: number;
  readonly x2: number;
  readonly y2: number;
  /** Default 0 (person). */
  readonly classIndex?: number;
}

/** The CenterNet targets of one batch, [N, C | 2 | 1, H/s, W/s] each, as the detector's training graph takes them. */
export interface DetectionTargets {
  readonly centerTarget: Float32Array;
  readonly sizeTarget: Float32Array;
  readonly offsetTarget: Float32Array;
  readonly regMask: Float32Array;
}

export interface DetectionGrid {
  /** Output cells across and down (the input size over the stride). */
  readonly width: number;
  readonly height: number;
  /** Input pixels per cell (4 for the zoo's detector). */
  readonly stride: number;
  readonly numClasses: number;
}

/**
 * CenterNet's gaussian_radius (its utils/image.py, min_overlap 0.7): the largest shift of a box's corners that
 * keeps its IoU with the box at `minOverlap` in the worst of three cases, the smallest of the three roots (the
 * formulas as CenterNet wrote them, b3 included, since its trained models and every reimplementation use them).
 */
export function gaussianRadius(height: number, width: number, minOverlap = 0.7): number {
  const a1 = 1;
  const b1 = height + width;
  const c1 = (width * height * (1 - minOverlap)) / (1 + minOverlap);
  const r1 = (b1 + Math.sqrt(b1 * b1 - 4 * a1 * c1)) / 2;
  const a2 = 4;
  const b2 = 2 * (height + width);
  const c2 = (1 - minOverlap) * width * height;
  const r2 = (b2 + Math.sqrt(b2 * b2 - 4 * a2 * c2)) / 2;
  const a3 = 4 * minOverlap;
  const b3 = -2 * minOverlap * (height + width);
  const c3 = (minOverlap - 1) * width * height;
  const r3 = (b3 + Math.sqrt(b3 * b3 - 4 * a3 * c3)) / 2;
  return Math.min(r1, r2, r3);
}

/**
 * Draws CenterNet's draw_umich_gaussian: a (2r+1)² Gaussian with σ = (2r+1)/6 centred on cell (cx, cy), each
 * cell keeping the larger of its value and the splat's, so the peak is exactly 1 whatever overlaps it.
 */
export function drawGaussian(plane: Float32Array, offset: number, width: number, height: number, cx: number, cy: number, radius: number): void {
  const sigma = (2 * radius + 1) / 6;
  const twoSigma2 = 2 * sigma * sigma;
  const left = Math.min(cx, radius);
  const right = Math.min(width - cx, radius + 1);
  const top = Math.min(cy, radius);
  const bottom = Math.min(height - cy, radius + 1);
  for (let dy = -top; dy < bottom; dy++) {
    for (let dx = -left; dx < right; dx++) {
      // The centre is exp(0) = 1 exactly: the focal loss counts a cell as positive only at 1.
      const value = Math.exp(-(dx * dx + dy * dy) / twoSigma2);
      const i = offset + (cy + dy) * width + cx + dx;
      if (value > plane[i]!) plane[i] = value;
    }
  }
}

/** Empty targets for `batch` samples on `grid`. */
export function createDetectionTargets(batch: number, grid: DetectionGrid): DetectionTargets {
  const cells = grid.width * grid.height;
  return {
    centerTarget: new Float32Array(batch * grid.numClasses * cells),
    sizeTarget: new Float32Array(batch * 2 * cells),
    offsetTarget: new Float32Array(batch * 2 * cells),
    regMask: new Float32Array(batch * cells),
  };
}

/**
 * Encodes sample `slot`'s boxes into the targets, as CenterNet's ctdet dataset does: for each box, its centre
 * c in cells (input pixels / stride) falls in cell ⌊c⌋, where the class's center heatmap gets a Gaussian of
 * gaussianRadius's size (at least 0), the size target the box's width and height in cells, the offset target
 * c − ⌊c⌋ and reg_mask a 1. Boxes less than a pixel wide or high, or whose centre is outside the input, are
 * left out; two boxes in one cell: the later one's size and offset (CenterNet's order).
 * Returns the number of objects encoded.
 */
export function encodeDetectionTargets(boxes: readonly TargetBox[], grid: DetectionGrid, targets: DetectionTargets, slot: number): number {
  const { width, height, stride, numClasses } = grid;
  const cells = width * height;
  let objects = 0;
  for (const box of boxes) {
    const w = (box.x2 - box.x1) / stride;
    const h = (box.y2 - box.y1) / stride;
    if (!(w * stride >= 1 && h * stride >= 1)) continue;
    const cx = (box.x1 + box.x2) / 2 / stride;
    const cy = (box.y1 + box.y2) / 2 / stride;
    const ix = Math.floor(cx);
    const iy = Math.floor(cy);
    if (ix < 0 || iy < 0 || ix >= width || iy >= height) continue;
    const classIndex = box.classIndex ?? 0;
    if (!(Number.isInteger(classIndex) && classIndex >= 0 && classIndex < numClasses)) throw new RangeError(`box class ${classIndex} is not one of the ${numClasses} classes`);
    const radius = Math.max(0, Math.floor(gaussianRadius(Math.ceil(h), Math.ceil(w))));
    drawGaussian(targets.centerTarget, (slot * numClasses + classIndex) * cells, width, height, ix, iy, radius);
    const cell = iy * width + ix;
    targets.sizeTarget[slot * 2 * cells + cell] = w;
    targets.sizeTarget[slot * 2 * cells + cells + cell] = h;
    targets.offsetTarget[slot * 2 * cells + cell] = cx - ix;
    targets.offsetTarget[slot * 2 * cells + cells + cell] = cy - iy;
    targets.regMask[slot * cells + cell] = 1;
    objects++;
  }
  return objects;
}
