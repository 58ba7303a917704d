import { relu } from "../ops/basic.js";
import { maxPool2d } from "../ops/pool.js";
import type { Sym } from "../tape.js";
import type { ForwardContext } from "../nn/context.js";
import { BatchNorm2d, Conv2d, ConvTranspose2d } from "../nn/layers.js";
import type { Init, Registry } from "../nn/parameters.js";
import { BasicBlock, Bottleneck, makeLayer } from "./blocks.js";

export interface SimpleBaselineConfig {
  /** ResNet depth: 18, 34, 50, 101 or 152. */
  readonly depth: number;
  /** Channels of the stem and the first stage: 64 in the reference; smaller for CPU tests. */
  readonly baseWidth: number;
  readonly deconvFilters: readonly number[];
  readonly deconvKernels: readonly number[];
  readonly deconvWithBias: boolean;
  readonly finalConvKernel: number;
}

const LAYOUTS: Readonly<Record<number, { block: typeof BasicBlock | typeof Bottleneck; blocks: readonly [number, number, number, number] }>> = {
  18: { block: BasicBlock, blocks: [2, 2, 2, 2] },
  34: { block: BasicBlock, blocks: [3, 4, 6, 3] },
  50: { block: Bottleneck, blocks: [3, 4, 6, 3] },
  101: { block: Bottleneck, blocks: [3, 4, 23, 3] },
  152: { block: Bottleneck, blocks: [3, 8, 36, 3] },
};

export const RESNET_DEPTHS = Object.keys(LAYOUTS).map(Number);

/**
 * SimpleBaseline (Xiao et al., 2018; the HRNet repository's pose_resnet): a ResNet backbone, three 4x4
 * stride-2 deconvolutions with BN and ReLU, and a 1x1 head, so heatmaps come out at a quarter of the input.
 * Initialization as the reference: backbone convolutions He-normal (torchvision's ResNet, in the absence of
 * ImageNet weights), deconvolutions and head N(0, 0.001²), head bias 0, BN γ=1, β=0.
 */
export class SimpleBaseline {
  readonly #stem: { conv: Conv2d; bn: BatchNorm2d };
  readonly #layers: { forward(ctx: ForwardContext, x: Sym): Sym }[][];
  readonly #deconvs: { deconv: ConvTranspose2d; bn: BatchNorm2d }[];
  readonly #head: Conv2d;

  constructor(registry: Registry, config: SimpleBaselineConfig, numKeypoints: number) {
    const layout = LAYOUTS[config.depth];
    if (layout === undefined) throw new RangeError(`unsupported ResNet depth ${config.depth}`);
    const backboneInit: Init = { kind: "kaiming-normal-fan-out" };
    const w = config.baseWidth;
    this.#stem = {
      conv: new Conv2d(registry, "conv1", 3, w, 7, { stride: 2, padding: 3, bias: false, init: backboneInit }),
      bn: new BatchNorm2d(registry, "bn1", w),
    };
    let channels = w;
    this.#layers = [];
    for (let i = 0; i < 4; i++) {
      const layer = makeLayer(registry, `layer${i + 1}`, layout.block, channels, w * 2 ** i, layout.blocks[i] as number, i === 0 ? 1 : 2, backboneInit);
      this.#layers.push(layer.blocks);
      channels = layer.outChannels;
    }
    this.#deconvs = config.deconvFilters.map((filters, i) => {
      const kernel = config.deconvKernels[i] ?? 4;
      const { padding, outputPadding } = deconvPadding(kernel);
      const deconv = new ConvTranspose2d(registry, `deconv_layers.${i * 3}`, channels, filters, kernel, {
        stride: 2,
        padding,
        outputPadding,
        bias: config.deconvWithBias,
        init: { kind: "normal", std: 0.001 },
      });
      const bn = new BatchNorm2d(registry, `deconv_layers.${i * 3 + 1}`, filters);
      channels = filters;
      return { deconv, bn };
    });
    this.#head = new Conv2d(registry, "final_layer", channels, numKeypoints, config.finalConvKernel, {
      padding: config.finalConvKernel === 3 ? 1 : 0,
      bias: true,
      init: { kind: "normal", std: 0.001 },
      biasInit: { kind: "zeros" },
    });
  }

  forward(ctx: ForwardContext, images: Sym): Sym {
    const t = ctx.tape;
    let x = relu(t, this.#stem.bn.forward(ctx, this.#stem.conv.forward(ctx, images)));
    x = maxPool2d(t, x, { kernel: [3, 3], stride: [2, 2], pads: [1, 1, 1, 1] });
    for (const layer of this.#layers) for (const block of layer) x = block.forward(ctx, x);
    for (const { deconv, bn } of this.#deconvs) x = relu(t, bn.forward(ctx, deconv.forward(ctx, x)));
    return this.#head.forward(ctx, x);
  }
}

/** Padding and output padding that make a stride-2 deconvolution exactly double the size (the reference's table). */
export function deconvPadding(kernel: number): { padding: number; outputPadding: number } {
  if (kernel === 4) return { padding: 1, outputPadding: 0 };
  if (kernel === 3) return { padding: 1, outputPadding: 1 };
  if (kernel === 2) return { padding: 0, outputPadding: 0 };
  throw new RangeError(`unsupported deconvolution kernel ${kernel} (2, 3 or 4)`);
}
