import { requireAllFinite, requireLength, requireMinLength, requirePositive, requirePositiveInteger } from "./argument-checks.js";
import { checkSize, type Size } from "./box.js";
import { checkInstanceIndex, instanceSlice } from "./batch-instance.js";
import { averageOutputs, flipHeatmaps } from "./flip-test.js";
import { blurredNeighbourhood, gaussianBlurKernel, modulateHeatmap, NEIGHBOURHOOD_SIDE, neighbourhoodOf } from "./gaussian-modulation.js";
import { heatmapMaximum } from "./heatmap-maximum.js";
import { darkRefines, refineDark, refineDarkUdp, refineQuarterOffset } from "./heatmap-refinement.js";
import type { DecodeDestination, DecodedKeypoints, EncodeDestination, EncodedKeypoints, KeypointCodec } from "./keypoint-codec.js";

/** How a heatmap maximum is refined below a pixel (the proto's HeatmapRefinement). */
export type HeatmapRefinement = "none" | "quarter-offset" | "dark";

/** Options shared by the heatmap codecs. */
export interface HeatmapCodecOptions {
  /** Model input in pixels, e.g. 192 x 256. */
  readonly inputSize: Size;
  /** Heatmap size, usually a quarter of the input, e.g. 48 x 64. */
  readonly heatmapSize: Size;
  readonly numKeypoints: number;
  /** Gaussian sigma in heatmap pixels (2 at 48 x 64, 3 at 72 x 96). */
  readonly sigma: number;
  readonly refinement?: HeatmapRefinement;
  /** Odd size of DARK's modulation blur; mmpose's rule: 11 for sigma 2, 17 for sigma 3. Default 11. */
  readonly blurKernelSize?: number;
}

/**
 * Where the Gaussian sits and how far it reaches:
 * - "rounded": at the nearest heatmap pixel (halves up; mmpose truncates toward zero, which differs only
 *   left of or above the crop), within ⌊3σ⌋ of it (MSRA; mmpose's window is one pixel longer on one side
 *   when 3σ is not an integer);
 * - "subpixel": at the exact position, over the whole plane (DarkPose's unbiased encoding);
 * - "subpixel-window": at the exact position, within ⌊3σ⌋ of the nearest pixel (UDP).
 */
type GaussianPlacement = "rounded" | "subpixel" | "subpixel-window";

interface HeatmapCodecConfig extends HeatmapCodecOptions {
  readonly kind: "msra-heatmap" | "udp-heatmap";
  readonly refinement: HeatmapRefinement;
  readonly placement: GaussianPlacement;
  readonly udp: boolean;
  readonly flipShift: boolean;
}

/**
 * Gaussian heatmaps, one plane per keypoint (K × H × W per instance). The MSRA and UDP codecs are this
 * class configured; construct those.
 *
 * A joint trains (weight > 0) when it is labelled and some heatmap pixel lies within 3σ of its Gaussian's
 * centre; otherwise its plane is all zero and its weight 0. (mmpose keeps weight 1 in the corner case where
 * the window ends exactly at the border, drawing nothing; here that joint gets weight 0.)
 */
export class HeatmapCodec implements KeypointCodec {
  readonly kind: "msra-heatmap" | "udp-heatmap";
  readonly inputSize: Size;
  readonly heatmapSize: Size;
  readonly numKeypoints: number;
  readonly sigma: number;
  readonly refinement: HeatmapRefinement;
  readonly blurKernelSize: number;
  readonly udp: boolean;
  readonly targetShape: readonly (readonly number[])[];
  readonly outputShape: readonly (readonly number[])[];
  readonly #placement: GaussianPlacement;
  readonly #flipShift: boolean;
  /** Heatmap pixels per input pixel, per axis, and back. */
  readonly #toHeatmap: readonly [number, number];
  readonly #toInput: readonly [number, number];
  readonly #kernel: Float64Array;
  readonly #gaussianX: Float64Array;
  readonly #gaussianY: Float64Array;
  readonly #modulated: Float64Array;
  readonly #blurScratch: Float64Array;
  readonly #maximum = new Float64Array(3);
  readonly #refined = new Float64Array(2);
  readonly #block = new Float64Array(NEIGHBOURHOOD_SIDE * NEIGHBOURHOOD_SIDE);

  protected constructor(config: HeatmapCodecConfig) {
    checkSize(config.inputSize, "inputSize");
    checkSize(config.heatmapSize, "heatmapSize");
    requirePositiveInteger(config.numKeypoints, "numKeypoints");
    requirePositive(config.sigma, "sigma");
    const { width, height } = config.heatmapSize;
    if (config.udp && (width < 2 || height < 2 || config.inputSize.width < 2 || config.inputSize.height < 2)) {
      throw new RangeError("UDP needs input and heatmap sizes of at least 2 pixels on each side");
    }
    this.kind = config.kind;
    this.inputSize = { width: config.inputSize.width, height: config.inputSize.height };
    this.heatmapSize = { width, height };
    this.numKeypoints = config.numKeypoints;
    this.sigma = config.sigma;
    this.refinement = config.refinement;
    this.blurKernelSize = config.blurKernelSize ?? 11;
    this.#kernel = gaussianBlurKernel(this.blurKernelSize);
    this.udp = config.udp;
    this.#placement = config.placement;
    this.#flipShift = config.flipShift;
    const shape = Object.freeze([config.numKeypoints, height, width]);
    this.targetShape = Object.freeze([shape]);
    this.outputShape = this.targetShape;
    this.#toHeatmap = config.udp
      ? [(width - 1) / (config.inputSize.width - 1), (height - 1) / (config.inputSize.height - 1)]
      : [width / config.inputSize.width, height / config.inputSize.height];
    this.#toInput = config.udp
      ? [(config.inputSize.width - 1) / (width - 1), (config.inputSize.height - 1) / (height - 1)]
      : [config.inputSize.width / width, config.inputSize.height / height];
    this.#gaussianX = new Float64Array(width);
    this.#gaussianY = new Float64Array(height);
    const dark = config.refinement === "dark";
    this.#modulated = new Float64Array(dark ? width * height : 0);
    this.#blurScratch = new Float64Array(dark ? width * height : 0);
  }

  encode(keypoints: ArrayLike<number>, visibility?: ArrayLike<number>, destination?: EncodeDestination): EncodedKeypoints {
    const k = this.numKeypoints;
    const { width, height } = this.heatmapSize;
    const planeSize = width * height;
    requireLength(keypoints, 2 * k, "keypoints");
    requireAllFinite(keypoints, "keypoints");
    if (visibility !== undefined) {
      requireLength(visibility, k, "visibility");
      requireAllFinite(visibility, "visibility");
    }
    const index = destination?.index ?? 0;
    const heatmaps = destination === undefined ? new Float32Array(k * planeSize) : instanceSlice(destination.targets[0], index, k * planeSize, "heatmap target");
    const weights = destination === undefined ? new Float32Array(k) : instanceSlice(destination.weights, index, k, "target weights");
    heatmaps.fill(0);
    for (let j = 0; j < k; j++) {
      const v = visibility === undefined ? 1 : (visibility[j] as number);
      let weight = v < 0.5 ? 0 : Math.min(v, 1);
      if (weight > 0) {
        const hx = (keypoints[2 * j] as number) * this.#toHeatmap[0];
        const hy = (keypoints[2 * j + 1] as number) * this.#toHeatmap[1];
        if (!this.#drawGaussian(heatmaps, j * planeSize, hx, hy)) weight = 0;
      }
      weights[j] = weight;
    }
    return { targets: [heatmaps], weights };
  }

  /** Draws one joint's Gaussian into its (zeroed) plane; false when no pixel lies within 3σ. */
  #drawGaussian(heatmaps: Float32Array, offset: number, hx: number, hy: number): boolean {
    const { width, height } = this.heatmapSize;
    const sigma = this.sigma;
    const reach = 3 * sigma;
    let centerX = hx;
    let centerY = hy;
    let x0 = 0;
    let x1 = width - 1;
    let y0 = 0;
    let y1 = height - 1;
    if (this.#placement === "subpixel") {
      if (hx + reach < 0 || hx - reach > width - 1 || hy + reach < 0 || hy - reach > height - 1) return false;
    } else {
      const mx = Math.floor(hx + 0.5);
      const my = Math.floor(hy + 0.5);
      const radius = Math.floor(reach);
      if (mx + radius < 0 || mx - radius > width - 1 || my + radius < 0 || my - radius > height - 1) return false;
      x0 = Math.max(0, mx - radius);
      x1 = Math.min(width - 1, mx + radius);
      y0 = Math.max(0, my - radius);
      y1 = Math.min(height - 1, my + radius);
      if (this.#placement === "rounded") {
        centerX = mx;
        centerY = my;
      }
    }
    const gx = this.#gaussianX;
    const gy = this.#gaussianY;
    const denominator = 2 * sigma * sigma;
    for (let x = x0; x <= x1; x++) gx[x] = Math.exp(-((x - centerX) ** 2) / denominator);
    for (let y = y0; y <= y1; y++) gy[y] = Math.exp(-((y - centerY) ** 2) / denominator);
    for (let y = y0; y <= y1; y++) {
      const row = offset + y * width;
      const vy = gy[y] as number;
      for (let x = x0; x <= x1; x++) heatmaps[row + x] = vy * (gx[x] as number);
    }
    return true;
  }

  decode(outputs: readonly Float32Array[], index = 0, destination?: DecodeDestination): DecodedKeypoints {
    const k = this.numKeypoints;
    const { width, height } = this.heatmapSize;
    const planeSize = width * height;
    const heatmaps = outputs[0];
    if (heatmaps === undefined) throw new RangeError("decode needs the heatmap output");
    checkInstanceIndex(index);
    requireMinLength(heatmaps, (index + 1) * k * planeSize, `heatmap output for instance ${index}`);
    const outIndex = destination?.index ?? 0;
    const keypoints = destination === undefined ? new Float32Array(2 * k) : instanceSlice(destination.keypoints, outIndex, 2 * k, "decoded keypoints");
    const scores = destination === undefined ? new Float32Array(k) : instanceSlice(destination.scores, outIndex, k, "decoded scores");
    const maximum = this.#maximum;
    const refined = this.#refined;
    for (let j = 0; j < k; j++) {
      const offset = (index * k + j) * planeSize;
      heatmapMaximum(heatmaps, offset, width, height, maximum);
      const x = maximum[0] as number;
      const y = maximum[1] as number;
      const value = maximum[2] as number;
      if (!(value > 0)) {
        // Nothing detected: mmpose reports (−1, −1) heatmap pixels, unrefined.
        refined[0] = -1;
        refined[1] = -1;
      } else if (this.refinement === "quarter-offset") {
        refineQuarterOffset(heatmaps, offset, width, height, x, y, refined);
      } else if (this.refinement === "dark") {
        this.#modulatedNeighbourhood(heatmaps, offset, x, y, value);
        if (this.udp) refineDarkUdp(this.#block, x, y, refined);
        else refineDark(this.#block, width, height, x, y, refined);
      } else {
        refined[0] = x;
        refined[1] = y;
      }
      keypoints[2 * j] = (refined[0] as number) * this.#toInput[0];
      keypoints[2 * j + 1] = (refined[1] as number) * this.#toInput[1];
      scores[j] = value;
    }
    return { keypoints, scores };
  }

  /**
   * DARK's modulated heatmap around (x, y) into #block. The modulation rescales the blurred plane by
   * (plane max / blurred max) ≥ 1, which shifts every log by the same constant and so leaves the Newton
   * step unchanged, unless the clamps before the log (DARK: 1e-10; UDP: 1e-3 and 50) bite. Only then is the
   * whole plane blurred to find the exact factor; otherwise the 25 blurred values are all that is needed.
   */
  #modulatedNeighbourhood(heatmaps: Float32Array, offset: number, x: number, y: number, planeMax: number): void {
    const { width, height } = this.heatmapSize;
    const block = this.#block;
    if (!this.udp && !darkRefines(width, height, x, y)) return;
    blurredNeighbourhood(heatmaps, offset, width, height, this.#kernel, x, y, block);
    let low = Infinity;
    for (const v of block) low = Math.min(low, v);
    // Rescaled values lie in [v, v · planeMax / max(block)] ⊆ [v, planeMax]: clamps bite only outside these bounds.
    const clampFree = this.udp ? low >= 1e-3 && planeMax <= 50 : low >= 1e-10;
    if (clampFree) return;
    modulateHeatmap(heatmaps, offset, width, height, this.#kernel, this.#modulated, this.#blurScratch);
    neighbourhoodOf(this.#modulated, width, height, x, y, block);
  }

  mergeFlipTest(outputs: readonly Float32Array[], flippedOutputs: readonly Float32Array[], flipPermutation: Int32Array, index = 0): Float32Array[] {
    const plain = outputs[0];
    const flipped = flippedOutputs[0];
    if (plain === undefined || flipped === undefined) throw new RangeError("the flip test needs the heatmap output of both passes");
    checkInstanceIndex(index);
    const { width, height } = this.heatmapSize;
    const size = this.numKeypoints * width * height;
    const mappedBack = flipHeatmaps(flipped, { numKeypoints: this.numKeypoints, height, width }, flipPermutation, { shift: this.#flipShift }, index);
    return [averageOutputs(plain, index * size, mappedBack, mappedBack)];
  }
}
