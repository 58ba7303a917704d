import { add, relu } from "../ops/basic.js";
import { upsampleNearest } from "../ops/resize.js";
import type { Sym } from "../tape.js";
import type { ForwardContext } from "../nn/context.js";
import { BatchNorm2d, Conv2d, ConvBnRelu } from "../nn/layers.js";
import type { Init, Registry } from "../nn/parameters.js";
import { BasicBlock, Bottleneck, makeLayer } from "./blocks.js";

export interface HrnetStageConfig {
  readonly numModules: number;
  readonly numBranches: number;
  readonly block: "BASIC" | "BOTTLENECK";
  readonly numBlocks: readonly number[];
  readonly numChannels: readonly number[];
}

export interface HrnetConfig {
  /** STAGE2..STAGE4 of MODEL.EXTRA (stage 1 is the reference's four bottlenecks of 64 planes). */
  readonly stages: readonly HrnetStageConfig[];
  readonly finalConvKernel: number;
  /** Planes of the stage-1 bottlenecks (64 in the reference). */
  readonly stage1Planes: number;
  /** Width of the stem convolutions (64 in the reference). */
  readonly stemWidth: number;
}

/** The reference stage layout of HRNet-W<width> (W32, W48; W8, W16 for CPUs). */
export function hrnetStages(width: number): HrnetStageConfig[] {
  return [
    { numModules: 1, numBranches: 2, block: "BASIC", numBlocks: [4, 4], numChannels: [width, width * 2] },
    { numModules: 4, numBranches: 3, block: "BASIC", numBlocks: [4, 4, 4], numChannels: [width, width * 2, width * 4] },
    { numModules: 3, numBranches: 4, block: "BASIC", numBlocks: [4, 4, 4, 4], numChannels: [width, width * 2, width * 4, width * 8] },
  ];
}

// The reference initializes every convolution with N(0, 0.001²).
const HRNET_INIT: Init = { kind: "normal", std: 0.001 };

type Unit = { forward(ctx: ForwardContext, x: Sym): Sym };

/** One multi-resolution module: parallel branches of residual blocks, then every output fuses all inputs. */
class HighResolutionModule {
  readonly #branches: Unit[][];
  readonly #fuse: (Unit[] | undefined)[][];
  readonly #outputs: number;

  constructor(registry: Registry, name: string, stage: HrnetStageConfig, inChannels: number[], multiScaleOutput: boolean) {
    const block = stage.block === "BASIC" ? BasicBlock : Bottleneck;
    this.#branches = stage.numChannels.map((channels, i) => {
      const layer = makeLayer(registry, `${name}.branches.${i}`, block, inChannels[i] as number, channels, stage.numBlocks[i] as number, 1, HRNET_INIT);
      inChannels[i] = layer.outChannels;
      return layer.blocks;
    });
    this.#outputs = multiScaleOutput ? stage.numBranches : 1;
    this.#fuse = [];
    if (stage.numBranches === 1) return;
    for (let i = 0; i < this.#outputs; i++) {
      const row: (Unit[] | undefined)[] = [];
      for (let j = 0; j < stage.numBranches; j++) {
        const prefix = `${name}.fuse_layers.${i}.${j}`;
        const cj = inChannels[j] as number;
        const ci = inChannels[i] as number;
        if (j > i) {
          // Lower resolution: 1x1 conv to this width, BN, nearest upsampling by 2^(j − i).
          const conv = new Conv2d(registry, `${prefix}.0`, cj, ci, 1, { bias: false, init: HRNET_INIT });
          const bn = new BatchNorm2d(registry, `${prefix}.1`, ci);
          const factor = 2 ** (j - i);
          row.push([{ forward: (ctx, x) => upsampleNearest(ctx.tape, bn.forward(ctx, conv.forward(ctx, x)), factor) }]);
        } else if (j === i) {
          row.push(undefined);
        } else {
          // Higher resolution: (i − j) stride-2 3x3 convolutions, ReLU between them, none after the last.
          const steps: Unit[] = [];
          for (let k = 0; k < i - j; k++) {
            const last = k === i - j - 1;
            steps.push(new ConvBnRelu(registry, `${prefix}.${k}.0`, `${prefix}.${k}.1`, cj, last ? ci : cj, 3, { stride: 2, padding: 1, init: HRNET_INIT, relu: !last }));
          }
          row.push(steps);
        }
      }
      this.#fuse.push(row);
    }
  }

  forward(ctx: ForwardContext, xs: Sym[]): Sym[] {
    const t = ctx.tape;
    const branched = xs.map((x, i) => (this.#branches[i] ?? []).reduce((y, block) => block.forward(ctx, y), x));
    if (branched.length === 1) return branched;
    const out: Sym[] = [];
    for (let i = 0; i < this.#outputs; i++) {
      const row = this.#fuse[i] ?? [];
      let y: Sym | undefined;
      for (let j = 0; j < branched.length; j++) {
        const path = row[j];
        const contribution = path === undefined ? (branched[j] as Sym) : path.reduce((v, unit) => unit.forward(ctx, v), branched[j] as Sym);
        y = y === undefined ? contribution : add(t, y, contribution);
      }
      out.push(relu(t, y as Sym));
    }
    return out;
  }
}

/**
 * HRNet for pose (Sun et al., 2019; the reference pose_hrnet): a stride-4 stem, a stage of four bottlenecks,
 * then stages of parallel branches at 1/4, 1/8, 1/16, 1/32 that exchange information at every module; the
 * heatmaps come from the highest-resolution branch through a 1x1 head.
 */
export class Hrnet {
  readonly #stem: ConvBnRelu[];
  readonly #layer1: Unit[];
  readonly #transitions: (Unit[] | undefined)[][];
  readonly #stages: HighResolutionModule[][];
  readonly #head: Conv2d;

  constructor(registry: Registry, config: HrnetConfig, numKeypoints: number) {
    const stem = config.stemWidth;
    this.#stem = [
      new ConvBnRelu(registry, "conv1", "bn1", 3, stem, 3, { stride: 2, padding: 1, init: HRNET_INIT }),
      new ConvBnRelu(registry, "conv2", "bn2", stem, stem, 3, { stride: 2, padding: 1, init: HRNET_INIT }),
    ];
    const layer1 = makeLayer(registry, "layer1", Bottleneck, stem, config.stage1Planes, 4, 1, HRNET_INIT);
    this.#layer1 = layer1.blocks;
    let previous = [layer1.outChannels];
    this.#transitions = [];
    this.#stages = [];
    config.stages.forEach((stage, s) => {
      const expansion = stage.block === "BASIC" ? BasicBlock.expansion : Bottleneck.expansion;
      const wanted = stage.numChannels.map((c) => c * expansion);
      this.#transitions.push(transition(registry, `transition${s + 1}`, previous, wanted));
      const channels = [...wanted];
      const modules: HighResolutionModule[] = [];
      for (let m = 0; m < stage.numModules; m++) {
        const last = s === config.stages.length - 1 && m === stage.numModules - 1;
        modules.push(new HighResolutionModule(registry, `stage${s + 2}.${m}`, stage, channels, !last));
      }
      this.#stages.push(modules);
      previous = channels;
    });
    this.#head = new Conv2d(registry, "final_layer", previous[0] as number, numKeypoints, config.finalConvKernel, {
      padding: config.finalConvKernel === 3 ? 1 : 0,
      bias: true,
      init: HRNET_INIT,
      biasInit: { kind: "zeros" },
    });
  }

  forward(ctx: ForwardContext, images: Sym): Sym {
    let x = this.#stem.reduce((y, unit) => unit.forward(ctx, y), images);
    x = this.#layer1.reduce((y, block) => block.forward(ctx, y), x);
    let branches = [x];
    this.#stages.forEach((modules, s) => {
      const transitions = this.#transitions[s] ?? [];
      branches = transitions.map((path, i) => {
        // New branches come from the lowest-resolution existing one.
        const source = branches[Math.min(i, branches.length - 1)] as Sym;
        return path === undefined ? source : path.reduce((y, unit) => unit.forward(ctx, y), source);
      });
      for (const module of modules) branches = module.forward(ctx, branches);
    });
    return this.#head.forward(ctx, branches[0] as Sym);
  }
}

/** The reference's transition layers: match widths of existing branches, add each new one with a stride-2 conv. */
function transition(registry: Registry, name: string, previous: readonly number[], wanted: readonly number[]): (Unit[] | undefined)[] {
  return wanted.map((channels, i) => {
    if (i < previous.length) {
      if (previous[i] === channels) return undefined;
      return [new ConvBnRelu(registry, `${name}.${i}.0`, `${name}.${i}.1`, previous[i] as number, channels, 3, { padding: 1, init: HRNET_INIT })];
    }
    const steps: Unit[] = [];
    const extra = i + 1 - previous.length;
    for (let j = 0; j < extra; j++) {
      const inChannels = previous.at(-1) as number;
      const outChannels = j === extra - 1 ? channels : inChannels;
      steps.push(new ConvBnRelu(registry, `${name}.${i}.${j}.0`, `${name}.${i}.${j}.1`, inChannels, outChannels, 3, { stride: 2, padding: 1, init: HRNET_INIT }));
    }
    return steps;
  });
}
