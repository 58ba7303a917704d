import type { SeededRandom } from "@poseloop/core";

/** How a tensor starts: the schemes the reference implementations use. */
export type Init =
  | { readonly kind: "zeros" }
  | { readonly kind: "ones" }
  | { readonly kind: "normal"; readonly std: number }
  /** Every element `value` (CenterNet's −2.19 center bias, so that the first predictions are 0.1 everywhere). */
  | { readonly kind: "constant"; readonly value: number }
  /** He normal, PyTorch's kaiming_normal_(mode="fan_out", nonlinearity="relu") as torchvision's ResNet uses. */
  | { readonly kind: "kaiming-normal-fan-out" }
  /** PyTorch's default for Conv and Linear: kaiming_uniform_(a=√5), i.e. U(−1/√fan_in, 1/√fan_in). */
  | { readonly kind: "torch-default"; readonly fanIn: number };

export interface TensorSpec {
  /** PyTorch-style dotted name ("layer1.0.conv1.weight"), so checkpoints map one to one. */
  readonly name: string;
  readonly shape: readonly number[];
  readonly init: Init;
}

/** Parameters and buffers of a model, in definition order (the order of every state file). */
export class Registry {
  readonly params: TensorSpec[] = [];
  readonly buffers: TensorSpec[] = [];

  param(name: string, shape: readonly number[], init: Init): string {
    this.params.push({ name, shape, init });
    return name;
  }

  buffer(name: string, shape: readonly number[], init: Init): string {
    this.buffers.push({ name, shape, init });
    return name;
  }
}

/**
 * Fills a tensor by its init scheme from `random` (one stream for the whole model, in definition order; the
 * engine seeds it with `SeededRandom.fromSeed32`).
 */
export function initialize(spec: TensorSpec, random: SeededRandom): Float32Array {
  const count = spec.shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(count);
  const init = spec.init;
  switch (init.kind) {
    case "zeros":
      break;
    case "ones":
      data.fill(1);
      break;
    case "constant":
      data.fill(init.value);
      break;
    case "normal":
      for (let i = 0; i < count; i++) data[i] = random.normalPaired() * init.std;
      break;
    case "kaiming-normal-fan-out": {
      const receptive = spec.shape.slice(2).reduce((a, b) => a * b, 1);
      const std = Math.sqrt(2 / ((spec.shape[0] ?? 1) * receptive));
      for (let i = 0; i < count; i++) data[i] = random.normalPaired() * std;
      break;
    }
    case "torch-default": {
      const bound = 1 / Math.sqrt(init.fanIn);
      for (let i = 0; i < count; i++) data[i] = random.uniform(-bound, bound);
      break;
    }
  }
  return data;
}
