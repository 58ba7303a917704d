import { add, relu } from "../ops/basic.js";
import type { Sym } from "../tape.js";
import type { ForwardContext } from "../nn/context.js";
import { BatchNorm2d, Conv2d } from "../nn/layers.js";
import type { Init, Registry } from "../nn/parameters.js";

/** A residual block of ResNet-18/34 and HRNet branches: two 3x3 convolutions and a shortcut. */
export class BasicBlock {
  static readonly expansion = 1;
  readonly #conv1: Conv2d;
  readonly #bn1: BatchNorm2d;
  readonly #conv2: Conv2d;
  readonly #bn2: BatchNorm2d;
  readonly #downsample: { conv: Conv2d; bn: BatchNorm2d } | undefined;

  constructor(registry: Registry, name: string, inChannels: number, planes: number, stride: number, convInit: Init) {
    this.#conv1 = new Conv2d(registry, `${name}.conv1`, inChannels, planes, 3, { stride, bias: false, init: convInit });
    this.#bn1 = new BatchNorm2d(registry, `${name}.bn1`, planes);
    this.#conv2 = new Conv2d(registry, `${name}.conv2`, planes, planes, 3, { bias: false, init: convInit });
    this.#bn2 = new BatchNorm2d(registry, `${name}.bn2`, planes);
    this.#downsample = downsample(registry, name, inChannels, planes, stride, convInit);
  }

  forward(ctx: ForwardContext, x: Sym): Sym {
    const t = ctx.tape;
    let out = relu(t, this.#bn1.forward(ctx, this.#conv1.forward(ctx, x)));
    out = this.#bn2.forward(ctx, this.#conv2.forward(ctx, out));
    const shortcut = this.#downsample === undefined ? x : this.#downsample.bn.forward(ctx, this.#downsample.conv.forward(ctx, x));
    return relu(t, add(t, out, shortcut));
  }
}

/** The bottleneck block of ResNet-50+ and HRNet's first stage: 1x1 → 3x3 (stride) → 1x1 (×4) and a shortcut. */
export class Bottleneck {
  static readonly expansion = 4;
  readonly #conv1: Conv2d;
  readonly #bn1: BatchNorm2d;
  readonly #conv2: Conv2d;
  readonly #bn2: BatchNorm2d;
  readonly #conv3: Conv2d;
  readonly #bn3: BatchNorm2d;
  readonly #downsample: { conv: Conv2d; bn: BatchNorm2d } | undefined;

  constructor(registry: Registry, name: string, inChannels: number, planes: number, stride: number, convInit: Init) {
    this.#conv1 = new Conv2d(registry, `${name}.conv1`, inChannels, planes, 1, { bias: false, init: convInit });
    this.#bn1 = new BatchNorm2d(registry, `${name}.bn1`, planes);
    this.#conv2 = new Conv2d(registry, `${name}.conv2`, planes, planes, 3, { stride, bias: false, init: convInit });
    this.#bn2 = new BatchNorm2d(registry, `${name}.bn2`, planes);
    this.#conv3 = new Conv2d(registry, `${name}.conv3`, planes, planes * Bottleneck.expansion, 1, { bias: false, init: convInit });
    this.#bn3 = new BatchNorm2d(registry, `${name}.bn3`, planes * Bottleneck.expansion);
    this.#downsample = downsample(registry, name, inChannels, planes * Bottleneck.expansion, stride, convInit);
  }

  forward(ctx: ForwardContext, x: Sym): Sym {
    const t = ctx.tape;
    let out = relu(t, this.#bn1.forward(ctx, this.#conv1.forward(ctx, x)));
    out = relu(t, this.#bn2.forward(ctx, this.#conv2.forward(ctx, out)));
    out = this.#bn3.forward(ctx, this.#conv3.forward(ctx, out));
    const shortcut = this.#downsample === undefined ? x : this.#downsample.bn.forward(ctx, this.#downsample.conv.forward(ctx, x));
    return relu(t, add(t, out, shortcut));
  }
}

export type BlockClass = typeof BasicBlock | typeof Bottleneck;

function downsample(registry: Registry, name: string, inChannels: number, outChannels: number, stride: number, convInit: Init) {
  if (stride === 1 && inChannels === outChannels) return undefined;
  return {
    conv: new Conv2d(registry, `${name}.downsample.0`, inChannels, outChannels, 1, { stride, bias: false, init: convInit }),
    bn: new BatchNorm2d(registry, `${name}.downsample.1`, outChannels),
  };
}

/** A stage of blocks ("layer1"... in ResNet): the first may change stride and width. */
export function makeLayer(
  registry: Registry,
  name: string,
  block: BlockClass,
  inChannels: number,
  planes: number,
  blocks: number,
  stride: number,
  convInit: Init,
): { blocks: (BasicBlock | Bottleneck)[]; outChannels: number } {
  const layer: (BasicBlock | Bottleneck)[] = [];
  let channels = inChannels;
  for (let i = 0; i < blocks; i++) {
    layer.push(new block(registry, `${name}.${i}`, channels, planes, i === 0 ? stride : 1, convInit));
    channels = planes * block.expansion;
  }
  return { blocks: layer, outChannels: channels };
}
