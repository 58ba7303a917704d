import { relu } from "../ops/basic.js";
import { batchNormEval, batchNormTrain } from "../ops/batchnorm.js";
import { conv2d, convTranspose2d } from "../ops/conv.js";
import { linear } from "../ops/linear.js";
import type { Sym } from "../tape.js";
import type { ForwardContext } from "./context.js";
import type { Init, Registry } from "./parameters.js";

export interface Conv2dOptions {
  readonly stride?: number;
  /** Symmetric padding; default (kernel − 1)/2 · dilation ("same" for odd kernels at stride 1). */
  readonly padding?: number;
  readonly dilation?: number;
  readonly groups?: number;
  readonly bias?: boolean;
  readonly init?: Init;
  readonly biasInit?: Init;
}

/** torch.nn.Conv2d with square kernels: parameters "<name>.weight" [out, in/g, k, k] and "<name>.bias". */
export class Conv2d {
  readonly weight: string;
  readonly bias: string | undefined;
  readonly #stride: number;
  readonly #padding: number;
  readonly #dilation: number;
  readonly #groups: number;

  constructor(registry: Registry, name: string, inChannels: number, outChannels: number, kernel: number, options: Conv2dOptions = {}) {
    this.#stride = options.stride ?? 1;
    this.#dilation = options.dilation ?? 1;
    this.#padding = options.padding ?? ((kernel - 1) / 2) * this.#dilation;
    this.#groups = options.groups ?? 1;
    const fanIn = (inChannels / this.#groups) * kernel * kernel;
    this.weight = registry.param(`${name}.weight`, [outChannels, inChannels / this.#groups, kernel, kernel], options.init ?? { kind: "torch-default", fanIn });
    this.bias = options.bias === true ? registry.param(`${name}.bias`, [outChannels], options.biasInit ?? { kind: "torch-default", fanIn }) : undefined;
  }

  forward(ctx: ForwardContext, x: Sym): Sym {
    const p = this.#padding;
    const bias = this.bias === undefined ? undefined : ctx.param(this.bias);
    return ctx.autocast([x, ctx.param(this.weight), bias] as const, (x, w, b) =>
      conv2d(ctx.tape, x, w, b, {
        stride: [this.#stride, this.#stride],
        pads: [p, p, p, p],
        dilation: [this.#dilation, this.#dilation],
        group: this.#groups,
      }),
    );
  }
}

/** torch.nn.ConvTranspose2d with square kernels: "<name>.weight" [in, out/g, k, k]. */
export class ConvTranspose2d {
  readonly weight: string;
  readonly bias: string | undefined;
  readonly #stride: number;
  readonly #padding: number;
  readonly #outputPadding: number;

  constructor(
    registry: Registry,
    name: string,
    inChannels: number,
    outChannels: number,
    kernel: number,
    options: { stride: number; padding: number; outputPadding?: number; bias?: boolean; init?: Init },
  ) {
    this.#stride = options.stride;
    this.#padding = options.padding;
    this.#outputPadding = options.outputPadding ?? 0;
    // PyTorch computes ConvTranspose fan-in from weight.size(1)·k² (out channels).
    const fanIn = outChannels * kernel * kernel;
    this.weight = registry.param(`${name}.weight`, [inChannels, outChannels, kernel, kernel], options.init ?? { kind: "torch-default", fanIn });
    this.bias = options.bias === true ? registry.param(`${name}.bias`, [outChannels], { kind: "torch-default", fanIn }) : undefined;
  }

  forward(ctx: ForwardContext, x: Sym): Sym {
    const p = this.#padding;
    const bias = this.bias === undefined ? undefined : ctx.param(this.bias);
    return ctx.autocast([x, ctx.param(this.weight), bias] as const, (x, w, b) =>
      convTranspose2d(ctx.tape, x, w, b, {
        stride: [this.#stride, this.#stride],
        pads: [p, p, p, p],
        outputPadding: [this.#outputPadding, this.#outputPadding],
      }),
    );
  }
}

/** torch.nn.BatchNorm2d: "<name>.weight", "<name>.bias", buffers "<name>.running_mean", "<name>.running_var". */
export class BatchNorm2d {
  readonly #name: string;
  readonly #epsilon: number;
  readonly #momentum: number;

  constructor(registry: Registry, name: string, channels: number, options: { epsilon?: number; momentum?: number } = {}) {
    this.#name = name;
    this.#epsilon = options.epsilon ?? 1e-5;
    this.#momentum = options.momentum ?? 0.1;
    registry.param(`${name}.weight`, [channels], { kind: "ones" });
    registry.param(`${name}.bias`, [channels], { kind: "zeros" });
    registry.buffer(`${name}.running_mean`, [channels], { kind: "zeros" });
    registry.buffer(`${name}.running_var`, [channels], { kind: "ones" });
  }

  forward(ctx: ForwardContext, x: Sym): Sym {
    const gamma = ctx.param(`${this.#name}.weight`);
    const beta = ctx.param(`${this.#name}.bias`);
    const mean = ctx.buffer(`${this.#name}.running_mean`);
    const variance = ctx.buffer(`${this.#name}.running_var`);
    if (ctx.mode === "eval") return batchNormEval(ctx.tape, x, gamma, beta, mean, variance, this.#epsilon);
    const result = batchNormTrain(ctx.tape, x, gamma, beta, mean, variance, { epsilon: this.#epsilon, momentum: this.#momentum });
    ctx.updatedBuffers.set(`${this.#name}.running_mean`, result.runningMean);
    ctx.updatedBuffers.set(`${this.#name}.running_var`, result.runningVar);
    return result.y;
  }
}

/** torch.nn.Linear: "<name>.weight" [out, in], "<name>.bias" [out]. */
export class Linear {
  readonly weight: string;
  readonly bias: string | undefined;

  constructor(registry: Registry, name: string, inFeatures: number, outFeatures: number, options: { bias?: boolean } = {}) {
    const init: Init = { kind: "torch-default", fanIn: inFeatures };
    this.weight = registry.param(`${name}.weight`, [outFeatures, inFeatures], init);
    this.bias = options.bias === false ? undefined : registry.param(`${name}.bias`, [outFeatures], init);
  }

  forward(ctx: ForwardContext, x: Sym): Sym {
    const bias = this.bias === undefined ? undefined : ctx.param(this.bias);
    return ctx.autocast([x, ctx.param(this.weight), bias] as const, (x, w, b) => linear(ctx.tape, x, w, b));
  }
}

/** Conv → BatchNorm → optional ReLU, the unit every model here is made of. */
export class ConvBnRelu {
  readonly conv: Conv2d;
  readonly bn: BatchNorm2d;
  readonly #relu: boolean;

  constructor(registry: Registry, convName: string, bnName: string, inChannels: number, outChannels: number, kernel: number, options: Conv2dOptions & { relu?: boolean } = {}) {
    this.conv = new Conv2d(registry, convName, inChannels, outChannels, kernel, { bias: false, ...options });
    this.bn = new BatchNorm2d(registry, bnName, outChannels);
    this.#relu = options.relu ?? true;
  }

  forward(ctx: ForwardContext, x: Sym): Sym {
    const y = this.bn.forward(ctx, this.conv.forward(ctx, x));
    return this.#relu ? relu(ctx.tape, y) : y;
  }
}
