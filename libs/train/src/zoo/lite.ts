import { add, relu } from "../ops/basic.js";
import type { Sym } from "../tape.js";
import type { ForwardContext } from "../nn/context.js";
import { BatchNorm2d, Conv2d, ConvBnRelu, ConvTranspose2d } from "../nn/layers.js";
import type { Init, Registry } from "../nn/parameters.js";
import { BasicBlock, makeLayer } from "./blocks.js";

export interface LiteConfig {
  /**
   * Widths at 1/2, 1/4 and 1/8 of the input, e.g. [16, 32, 64]; a fourth width adds a stage at 1/16 whose
   * features come back up to 1/8 the same way the 1/8 ones come back to 1/4.
   */
  readonly channels: readonly [number, number, number] | readonly [number, number, number, number];
  readonly blocksPerStage: number;
  /**
   * 4 (default): heatmaps at a quarter of the input, like the big models. 2: one more deconvolution brings the
   * quarter-resolution features up to half (keeping the second width: the first is narrower than 17 heatmaps),
   * adds the stem's first (1/2) features through a 1x1 projection, fuses them with a 3x3 conv, and the head
   * works there: heatmap cells half as big, for keypoints whose tolerance is under a quarter-resolution cell
   * (the face's, at small inputs).
   */
  readonly heatmapStride?: 2 | 4;
}

/** The lite models' convolutions start as torchvision's ResNet does (He normal, fan out). */
const LITE_INIT: Init = { kind: "kaiming-normal-fan-out" };

/**
 * The lite network up to its features at a quarter of the input: a stride-4 stem, residual blocks at 1/4 and
 * 1/8 (and 1/16 with a fourth width, brought back to 1/8 by a deconvolution, an add and a 3x3 fuse), and a
 * stride-2 deconvolution back to 1/4 added to the 1/4 features (a U-Net-style skip keeps localisation sharp)
 * and fused by a 3x3 conv. Shared by the heatmap model and the detector; the parameter names are the heatmap
 * model's, so its checkpoints load into either.
 */
export class LiteFeatures {
  /** Channels of the quarter-resolution features (the second width). */
  readonly channels: number;
  readonly #stem: readonly [ConvBnRelu, ConvBnRelu];
  readonly #layer1: { forward(ctx: ForwardContext, x: Sym): Sym }[];
  readonly #layer2: { forward(ctx: ForwardContext, x: Sym): Sym }[];
  readonly #up: { deconv: ConvTranspose2d; bn: BatchNorm2d };
  readonly #fuse: ConvBnRelu;
  readonly #context: { layer: { forward(ctx: ForwardContext, x: Sym): Sym }[]; deconv: ConvTranspose2d; bn: BatchNorm2d; fuse: ConvBnRelu } | undefined;

  constructor(registry: Registry, config: Pick<LiteConfig, "channels" | "blocksPerStage">) {
    const [c0, c1, c2, c3] = config.channels;
    this.channels = c1;
    this.#stem = [
      new ConvBnRelu(registry, "conv1", "bn1", 3, c0, 3, { stride: 2, init: LITE_INIT }),
      new ConvBnRelu(registry, "conv2", "bn2", c0, c1, 3, { stride: 2, init: LITE_INIT }),
    ];
    this.#layer1 = makeLayer(registry, "layer1", BasicBlock, c1, c1, config.blocksPerStage, 1, LITE_INIT).blocks;
    this.#layer2 = makeLayer(registry, "layer2", BasicBlock, c1, c2, config.blocksPerStage, 2, LITE_INIT).blocks;
    this.#context =
      c3 === undefined
        ? undefined
        : {
            layer: makeLayer(registry, "layer3", BasicBlock, c2, c3, config.blocksPerStage, 2, LITE_INIT).blocks,
            deconv: new ConvTranspose2d(registry, "up16.0", c3, c2, 4, { stride: 2, padding: 1, init: { kind: "normal", std: 0.001 } }),
            bn: new BatchNorm2d(registry, "up16.1", c2),
            fuse: new ConvBnRelu(registry, "fuse16.0", "fuse16.1", c2, c2, 3, { init: LITE_INIT }),
          };
    this.#up = {
      deconv: new ConvTranspose2d(registry, "up.0", c2, c1, 4, { stride: 2, padding: 1, init: { kind: "normal", std: 0.001 } }),
      bn: new BatchNorm2d(registry, "up.1", c1),
    };
    this.#fuse = new ConvBnRelu(registry, "fuse.0", "fuse.1", c1, c1, 3, { init: LITE_INIT });
  }

  /** The fused features at 1/4 of the input, and the stem's first ones at 1/2 (a skip for a finer head). */
  forward(ctx: ForwardContext, images: Sym): { quarter: Sym; half: Sym } {
    const t = ctx.tape;
    const [stem1, stem2] = this.#stem;
    const half = stem1.forward(ctx, images);
    const quarter = this.#layer1.reduce((y, block) => block.forward(ctx, y), stem2.forward(ctx, half));
    let eighth = this.#layer2.reduce((y, block) => block.forward(ctx, y), quarter);
    const context = this.#context;
    if (context !== undefined) {
      const sixteenth = context.layer.reduce((y, block) => block.forward(ctx, y), eighth);
      eighth = context.fuse.forward(ctx, add(t, relu(t, context.bn.forward(ctx, context.deconv.forward(ctx, sixteenth))), eighth));
    }
    const up = relu(t, this.#up.bn.forward(ctx, this.#up.deconv.forward(ctx, eighth)));
    return { quarter: this.#fuse.forward(ctx, add(t, up, quarter)), half };
  }
}

/**
 * The small heatmap model for CPUs, tests and the demo (inputs 48x64 to 96x128): the lite features at 1/4
 * (LiteFeatures) and a 1x1 head. Heatmaps at a quarter of the input, like the big models. A fourth width adds
 * residual blocks at 1/16: context across the whole crop, which is what tells a person's left limbs from their
 * right (on the synthetic demo it halved the left/right swaps of ankles and knees). `heatmapStride: 2` adds a
 * last step up to half the input, with the stem's 1/2 features as its skip.
 */
export class LitePose {
  readonly #features: LiteFeatures;
  readonly #head: Conv2d;
  readonly #half: { deconv: ConvTranspose2d; bn: BatchNorm2d; skip: ConvBnRelu; fuse: ConvBnRelu } | undefined;

  constructor(registry: Registry, config: LiteConfig, numKeypoints: number) {
    const [c0, c1] = config.channels;
    this.#features = new LiteFeatures(registry, config);
    this.#half =
      config.heatmapStride === 2
        ? {
            deconv: new ConvTranspose2d(registry, "up2.0", c1, c1, 4, { stride: 2, padding: 1, init: { kind: "normal", std: 0.001 } }),
            bn: new BatchNorm2d(registry, "up2.1", c1),
            skip: new ConvBnRelu(registry, "skip2.0", "skip2.1", c0, c1, 1, { init: LITE_INIT }),
            fuse: new ConvBnRelu(registry, "fuse2.0", "fuse2.1", c1, c1, 3, { init: LITE_INIT }),
          }
        : undefined;
    this.#head = new Conv2d(registry, "final_layer", c1, numKeypoints, 1, { bias: true, init: { kind: "normal", std: 0.001 }, biasInit: { kind: "zeros" } });
  }

  forward(ctx: ForwardContext, images: Sym): Sym {
    const t = ctx.tape;
    const { quarter, half } = this.#features.forward(ctx, images);
    const h = this.#half;
    if (h === undefined) return this.#head.forward(ctx, quarter);
    return this.#head.forward(ctx, h.fuse.forward(ctx, add(t, relu(t, h.bn.forward(ctx, h.deconv.forward(ctx, quarter))), h.skip.forward(ctx, half))));
  }
}
