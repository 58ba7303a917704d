import type { Value } from "@poseloop/onnx";
import { add, relu, scale, sigmoid } from "../ops/basic.js";
import { centerFocalLoss, maskedL1Loss } from "../ops/loss.js";
import type { Sym } from "../tape.js";
import type { ForwardContext } from "../nn/context.js";
import { Conv2d } from "../nn/layers.js";
import type { Registry } from "../nn/parameters.js";
import { LiteFeatures, type LiteConfig } from "./lite.js";

/** The detector's output grid: one cell per 4x4 input pixels (DetectorSpec.strides = [4]). */
export const DETECTOR_STRIDE = 4;

/** Names of the detector's exported outputs and of its training loss inputs (the contract of DetectorHead CENTERNET). */
export const DetectorIo = {
  centers: "centers",
  sizes: "sizes",
  offsets: "offsets",
  centerTarget: "center_target",
  sizeTarget: "size_target",
  offsetTarget: "offset_target",
  regMask: "reg_mask",
} as const;

/**
 * The detector's training targets for a batch of B images of H x W, on its grid (h = H/4, w = W/4), in grid
 * cells (input pixels / 4), as CenterNet builds them: for an object centred at (cx, cy) in its cell
 * (ix, iy) = (⌊cx⌋, ⌊cy⌋) — the class's Gaussian splat peaking at exactly 1 there (the focal loss counts the
 * cells equal to 1 as positives), its size (w, h) and offset (cx − ix, cy − iy) there, and the mask 1 there.
 */
export interface DetectionTargets {
  /** [B, C, h, w] */
  readonly centerTarget: Float32Array;
  /** [B, 2, h, w] */
  readonly sizeTarget: Float32Array;
  /** [B, 2, h, w] */
  readonly offsetTarget: Float32Array;
  /** [B, 1, h, w] */
  readonly regMask: Float32Array;
}

/** A StepBatch for the detector: the images and its loss inputs (a detector has no heatmap targets). */
export function detectionStepBatch(images: Float32Array, targets: DetectionTargets): { images: Float32Array; targets: Float32Array; targetWeights: Float32Array; lossInputs: Record<string, Float32Array> } {
  return {
    images,
    targets: new Float32Array(0),
    targetWeights: new Float32Array(0),
    lossInputs: {
      [DetectorIo.centerTarget]: targets.centerTarget,
      [DetectorIo.sizeTarget]: targets.sizeTarget,
      [DetectorIo.offsetTarget]: targets.offsetTarget,
      [DetectorIo.regMask]: targets.regMask,
    },
  };
}

export interface DetectorLiteConfig {
  /** The lite backbone's widths at 1/2, 1/4, 1/8 (and 1/16); the head works on the 1/4 features (the second width). */
  readonly channels: LiteConfig["channels"];
  readonly blocksPerStage: number;
  /** Center heatmaps, one per class (1: person). */
  readonly numClasses: number;
  /** Width of each head branch's 3x3 convolution (CenterNet's head_conv). */
  readonly headChannels: number;
  /** Weights of the size and offset L1 terms against the focal loss (CenterNet: 0.1 and 1). */
  readonly sizeWeight: number;
  readonly offsetWeight: number;
}

/**
 * One CenterNet head branch ("<name>.0" 3x3 conv + ReLU + "<name>.2" 1x1 conv, both with biases). `small`:
 * both convolutions start at N(0, 0.001) with zero biases (CenterNet's fill_fc_weights for the regression
 * heads); otherwise PyTorch's default init and `outBias` on the last bias.
 */
class HeadBranch {
  readonly #hidden: Conv2d;
  readonly #out: Conv2d;

  constructor(registry: Registry, name: string, inChannels: number, hidden: number, outChannels: number, init: { small: true } | { small: false; outBias: number }) {
    const small = { init: { kind: "normal", std: 0.001 }, biasInit: { kind: "zeros" } } as const;
    this.#hidden = new Conv2d(registry, `${name}.0`, inChannels, hidden, 3, { bias: true, ...(init.small ? small : {}) });
    this.#out = new Conv2d(registry, `${name}.2`, hidden, outChannels, 1, { bias: true, ...(init.small ? small : { biasInit: { kind: "constant", value: init.outBias } }) });
  }

  forward(ctx: ForwardContext, x: Sym): Sym {
    return this.#out.forward(ctx, relu(ctx.tape, this.#hidden.forward(ctx, x)));
  }
}

/**
 * The zoo's person detector: the lite backbone up to its fused features at 1/4 of the input (LiteFeatures, the
 * same parameters as the lite heatmap model's) and CenterNet's head there (Zhou et al., "Objects as Points"):
 * per class a center heatmap ("hm"), and per cell a box size ("wh") and a sub-cell center offset ("reg"), in
 * grid cells. The heads are initialized as CenterNet's: the center bias at −2.19 (σ = 0.1, so the focal loss
 * starts near its balance instead of drowning in confident negatives), the regression heads near zero.
 */
export class DetectorLite {
  readonly #features: LiteFeatures;
  readonly #centers: HeadBranch;
  readonly #sizes: HeadBranch;
  readonly #offsets: HeadBranch;
  readonly #config: DetectorLiteConfig;

  constructor(registry: Registry, config: DetectorLiteConfig) {
    this.#config = config;
    this.#features = new LiteFeatures(registry, config);
    const c = this.#features.channels;
    this.#centers = new HeadBranch(registry, "hm", c, config.headChannels, config.numClasses, { small: false, outBias: -2.19 });
    this.#sizes = new HeadBranch(registry, "wh", c, config.headChannels, 2, { small: true });
    this.#offsets = new HeadBranch(registry, "reg", c, config.headChannels, 2, { small: true });
  }

  /** The head's raw outputs: center logits [N, C, h, w], sizes and offsets [N, 2, h, w]. */
  heads(ctx: ForwardContext, images: Sym): { centerLogits: Sym; sizes: Sym; offsets: Sym } {
    const { quarter } = this.#features.forward(ctx, images);
    return { centerLogits: this.#centers.forward(ctx, quarter), sizes: this.#sizes.forward(ctx, quarter), offsets: this.#offsets.forward(ctx, quarter) };
  }

  /** The center probabilities alone (what `ModelDefinition.forward` returns for the detector). */
  centers(ctx: ForwardContext, images: Sym): Sym {
    return sigmoid(ctx.tape, this.#centers.forward(ctx, this.#features.forward(ctx, images).quarter));
  }

  /** The exported outputs, in DetectorHead CENTERNET's order: center probabilities (sigmoid in the graph), sizes, offsets. */
  outputs(ctx: ForwardContext, images: Sym): [string, Sym][] {
    const { centerLogits, sizes, offsets } = this.heads(ctx, images);
    return [
      [DetectorIo.centers, sigmoid(ctx.tape, centerLogits)],
      [DetectorIo.sizes, sizes],
      [DetectorIo.offsets, offsets],
    ];
  }

  /**
   * CenterNet's training loss: the focal loss of the center logits against the Gaussian splats, plus the
   * weighted L1 of sizes and offsets at the objects' center cells (reg_mask).
   */
  loss(ctx: ForwardContext, images: Sym, inputs: ReadonlyMap<string, Value>): Sym {
    const t = ctx.tape;
    const input = (name: string): Value => {
      const value = inputs.get(name);
      if (value === undefined) throw new RangeError(`the detector's loss needs the input ${name}`);
      return value;
    };
    const { centerLogits, sizes, offsets } = this.heads(ctx, images);
    const mask = input(DetectorIo.regMask);
    const focal = centerFocalLoss(t, centerLogits, input(DetectorIo.centerTarget));
    const size = scale(t, maskedL1Loss(t, sizes, input(DetectorIo.sizeTarget), mask), this.#config.sizeWeight);
    const offset = scale(t, maskedL1Loss(t, offsets, input(DetectorIo.offsetTarget), mask), this.#config.offsetWeight);
    return add(t, add(t, focal, size), offset);
  }
}
