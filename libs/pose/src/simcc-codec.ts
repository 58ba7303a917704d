import { requireAllFinite, requireLength, requireMinLength, requireNonNegative, requirePositive, requirePositiveInteger } from "./argument-checks.js";
import { checkInstanceIndex, instanceSlice } from "./batch-instance.js";
import { checkSize, type Size } from "./box.js";
import { averageOutputs, flipSimccVectors } from "./flip-test.js";
import { vectorMaximum } from "./heatmap-maximum.js";
import type { DecodeDestination, DecodedKeypoints, EncodeDestination, EncodedKeypoints, KeypointCodec } from "./keypoint-codec.js";

export interface SimccCodecOptions {
  /** Model input in pixels, e.g. 192 x 256. */
  readonly inputSize: Size;
  readonly numKeypoints: number;
  /** Bins per input pixel. Default 2.0, as the reference configs. */
  readonly splitRatio?: number;
  /**
   * Gaussian label sigmas in bins, per axis (RTMPose: 4.9 and 5.66 at 192 x 256). 0 on both axes gives
   * one-hot labels (mmpose's "standard" smoothing). Default 6.0, mmpose's default.
   */
  readonly sigmaX?: number;
  readonly sigmaY?: number;
  /** Label smoothing weight in [0, 1): only for one-hot labels, as mmpose allows it. Default 0. */
  readonly labelSmoothing?: number;
  /** Divide Gaussian labels by σ·√(2π) so they sum to about 1. Default true. */
  readonly normalize?: boolean;
}

/** numpy's `around`: halves go to the even neighbour. */
function roundHalfEven(value: number): number {
  const floor = Math.floor(value);
  const fraction = value - floor;
  if (fraction > 0.5) return floor + 1;
  if (fraction < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/**
 * SimCC (Li et al. 2022; mmpose's SimCCLabel): each coordinate is a 1-D classification over
 * input size × splitRatio bins (K × Wx and K × Wy per instance). A joint's bin is round(x · splitRatio); decoding
 * takes the argmax of each vector divided by splitRatio, so a round trip is exact to half a bin. The score is
 * the smaller of the two vectors' maxima.
 */
export class SimccCodec implements KeypointCodec {
  readonly kind = "simcc" as const;
  readonly inputSize: Size;
  readonly numKeypoints: number;
  readonly splitRatio: number;
  readonly sigmaX: number;
  readonly sigmaY: number;
  readonly labelSmoothing: number;
  readonly normalize: boolean;
  readonly udp = false;
  /** Bins per axis: round(input × splitRatio). */
  readonly lengthX: number;
  readonly lengthY: number;
  readonly targetShape: readonly (readonly number[])[];
  readonly outputShape: readonly (readonly number[])[];
  readonly #maximum = new Float64Array(2);

  constructor(options: SimccCodecOptions) {
    checkSize(options.inputSize, "inputSize");
    requirePositiveInteger(options.numKeypoints, "numKeypoints");
    this.inputSize = { width: options.inputSize.width, height: options.inputSize.height };
    this.numKeypoints = options.numKeypoints;
    this.splitRatio = options.splitRatio ?? 2.0;
    requirePositive(this.splitRatio, "splitRatio");
    this.sigmaX = options.sigmaX ?? 6.0;
    this.sigmaY = options.sigmaY ?? 6.0;
    requireNonNegative(this.sigmaX, "sigmaX");
    requireNonNegative(this.sigmaY, "sigmaY");
    if ((this.sigmaX === 0) !== (this.sigmaY === 0)) throw new RangeError("sigmaX and sigmaY must both be 0 (one-hot labels) or both positive");
    this.labelSmoothing = options.labelSmoothing ?? 0;
    if (!(this.labelSmoothing >= 0 && this.labelSmoothing < 1)) throw new RangeError(`labelSmoothing must be in [0, 1), got ${String(this.labelSmoothing)}`);
    if (this.labelSmoothing > 0 && this.sigmaX > 0) throw new RangeError("labelSmoothing applies to one-hot labels only (sigmaX = sigmaY = 0), as in mmpose");
    this.normalize = options.normalize ?? true;
    this.lengthX = roundHalfEven(this.inputSize.width * this.splitRatio);
    this.lengthY = roundHalfEven(this.inputSize.height * this.splitRatio);
    if (this.lengthX < 2 || this.lengthY < 2) throw new RangeError("SimCC needs at least 2 bins per axis");
    this.targetShape = Object.freeze([Object.freeze([this.numKeypoints, this.lengthX]), Object.freeze([this.numKeypoints, this.lengthY])]);
    this.outputShape = this.targetShape;
  }

  encode(keypoints: ArrayLike<number>, visibility?: ArrayLike<number>, destination?: EncodeDestination): EncodedKeypoints {
    const k = this.numKeypoints;
    const { lengthX, lengthY } = this;
    requireLength(keypoints, 2 * k, "keypoints");
    requireAllFinite(keypoints, "keypoints");
    if (visibility !== undefined) {
      requireLength(visibility, k, "visibility");
      requireAllFinite(visibility, "visibility");
    }
    const index = destination?.index ?? 0;
    const targetX = destination === undefined ? new Float32Array(k * lengthX) : instanceSlice(destination.targets[0], index, k * lengthX, "SimCC x target");
    const targetY = destination === undefined ? new Float32Array(k * lengthY) : instanceSlice(destination.targets[1], index, k * lengthY, "SimCC y target");
    const weights = destination === undefined ? new Float32Array(k) : instanceSlice(destination.weights, index, k, "target weights");
    targetX.fill(0);
    targetY.fill(0);
    for (let j = 0; j < k; j++) {
      const v = visibility === undefined ? 1 : (visibility[j] as number);
      let weight = v < 0.5 ? 0 : Math.min(v, 1);
      if (weight > 0) {
        const binX = roundHalfEven((keypoints[2 * j] as number) * this.splitRatio);
        const binY = roundHalfEven((keypoints[2 * j + 1] as number) * this.splitRatio);
        const drawn =
          this.sigmaX > 0
            ? this.#insideReach(binX, this.sigmaX, lengthX) && this.#insideReach(binY, this.sigmaY, lengthY)
            : binX >= 0 && binX < lengthX && binY >= 0 && binY < lengthY;
        if (drawn) {
          this.#writeLabel(targetX, j * lengthX, lengthX, binX, this.sigmaX);
          this.#writeLabel(targetY, j * lengthY, lengthY, binY, this.sigmaY);
        } else {
          weight = 0;
        }
      }
      weights[j] = weight;
    }
    return { targets: [targetX, targetY], weights };
  }

  /** Whether some bin lies within 3σ of `bin` (otherwise the joint is outside the crop and must not train). */
  #insideReach(bin: number, sigma: number, length: number): boolean {
    return bin + 3 * sigma >= 0 && bin - 3 * sigma <= length - 1;
  }

  #writeLabel(target: Float32Array, offset: number, length: number, bin: number, sigma: number): void {
    if (sigma > 0) {
      const denominator = 2 * sigma * sigma;
      const scale = this.normalize ? 1 / (sigma * Math.sqrt(2 * Math.PI)) : 1;
      for (let i = 0; i < length; i++) target[offset + i] = Math.exp(-((i - bin) ** 2) / denominator) * scale;
      return;
    }
    if (this.labelSmoothing > 0) target.fill(this.labelSmoothing / (length - 1), offset, offset + length);
    target[offset + bin] = 1 - this.labelSmoothing;
  }

  decode(outputs: readonly Float32Array[], index = 0, destination?: DecodeDestination): DecodedKeypoints {
    const k = this.numKeypoints;
    const { lengthX, lengthY } = this;
    const simccX = outputs[0];
    const simccY = outputs[1];
    if (simccX === undefined || simccY === undefined) throw new RangeError("decode needs the SimCC x and y outputs");
    checkInstanceIndex(index);
    requireMinLength(simccX, (index + 1) * k * lengthX, `SimCC x output for instance ${index}`);
    requireMinLength(simccY, (index + 1) * k * lengthY, `SimCC y output for instance ${index}`);
    const outIndex = destination?.index ?? 0;
    const keypoints = destination === undefined ? new Float32Array(2 * k) : instanceSlice(destination.keypoints, outIndex, 2 * k, "decoded keypoints");
    const scores = destination === undefined ? new Float32Array(k) : instanceSlice(destination.scores, outIndex, k, "decoded scores");
    const maximum = this.#maximum;
    for (let j = 0; j < k; j++) {
      vectorMaximum(simccX, (index * k + j) * lengthX, lengthX, maximum);
      const binX = maximum[0] as number;
      const valueX = maximum[1] as number;
      vectorMaximum(simccY, (index * k + j) * lengthY, lengthY, maximum);
      const binY = maximum[0] as number;
      const value = Math.min(valueX, maximum[1] as number);
      // Nothing detected: mmpose reports bin −1 on both axes.
      const detected = value > 0;
      keypoints[2 * j] = (detected ? binX : -1) / this.splitRatio;
      keypoints[2 * j + 1] = (detected ? binY : -1) / this.splitRatio;
      scores[j] = value;
    }
    return { keypoints, scores };
  }

  mergeFlipTest(outputs: readonly Float32Array[], flippedOutputs: readonly Float32Array[], flipPermutation: Int32Array, index = 0): Float32Array[] {
    const [plainX, plainY] = outputs;
    const [flippedX, flippedY] = flippedOutputs;
    if (plainX === undefined || plainY === undefined || flippedX === undefined || flippedY === undefined) {
      throw new RangeError("the flip test needs the SimCC x and y outputs of both passes");
    }
    checkInstanceIndex(index);
    const shape = { numKeypoints: this.numKeypoints, lengthX: this.lengthX, lengthY: this.lengthY };
    const [backX, backY] = flipSimccVectors(flippedX, flippedY, shape, flipPermutation, index);
    return [
      averageOutputs(plainX, index * this.numKeypoints * this.lengthX, backX, backX),
      averageOutputs(plainY, index * this.numKeypoints * this.lengthY, backY, backY),
    ];
  }
}
