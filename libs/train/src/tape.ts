import type { Dim, GraphBuilder, Value } from "@poseloop/onnx";
import { AppError, Code } from "@poseloop/core";

/** A tensor in a graph being compiled: its ONNX value, its shape, and whether gradients flow to it. */
export interface Sym {
  readonly value: Value;
  readonly shape: readonly Dim[];
  readonly requiresGrad: boolean;
}

/** Computes the gradients of an op's inputs from the gradients of its outputs (undefined: no gradient). */
export type Backward = (outputGrads: readonly (Sym | undefined)[]) => readonly (Sym | undefined)[];

interface Record {
  readonly inputs: readonly Sym[];
  readonly outputs: readonly Sym[];
  readonly backward: Backward;
}

/**
 * Reverse-mode differentiation over ONNX: ops emit their forward nodes into the graph and record how to emit
 * their vector-Jacobian products; `gradients()` replays the records backwards, emitting the gradient nodes
 * into the same graph and summing the contributions of tensors used more than once.
 */
export class Tape {
  readonly g: GraphBuilder;
  /**
   * The channel block of onnxruntime's blocked-layout (NCHWc) CPU convolution kernels when the graph is
   * compiled for its CPU provider (see conv2d); undefined: standard ONNX Conv nodes only.
   */
  readonly nchwcBlock: number | undefined;
  readonly #records: Record[] = [];

  constructor(graph: GraphBuilder, options: { nchwcBlock?: number } = {}) {
    this.g = graph;
    this.nchwcBlock = options.nchwcBlock;
  }

  /** Wraps a value as a tensor of the tape. */
  sym(value: Value, shape: readonly Dim[], requiresGrad = false): Sym {
    return { value, shape, requiresGrad };
  }

  /** Records an op whose outputs need gradients when any input does. Returns whether it was recorded. */
  record(inputs: readonly Sym[], outputs: readonly Sym[], backward: Backward): void {
    if (inputs.some((input) => input.requiresGrad)) this.#records.push({ inputs, outputs, backward });
  }

  /** Whether any of `inputs` needs a gradient (outputs of an op need one exactly then). */
  static needsGrad(...inputs: readonly (Sym | undefined)[]): boolean {
    return inputs.some((input) => input?.requiresGrad === true);
  }

  /**
   * Emits the gradients of `loss` (a scalar) with respect to `wrt`, seeded with `seed` (dloss; 1 by default,
   * 1/k under gradient accumulation). Tensors of `wrt` that the loss does not depend on get no entry.
   */
  gradients(loss: Sym, wrt: readonly Sym[], seed: Sym): Map<Sym, Sym> {
    const grads = new Map<Sym, Sym>([[loss, seed]]);
    for (let i = this.#records.length - 1; i >= 0; i--) {
      const record = this.#records[i] as Record;
      const outputGrads = record.outputs.map((output) => grads.get(output));
      if (outputGrads.every((grad) => grad === undefined)) continue;
      const inputGrads = record.backward(outputGrads);
      record.inputs.forEach((input, j) => {
        const grad = inputGrads[j];
        if (grad === undefined || !input.requiresGrad) return;
        checkShape(input, grad);
        const previous = grads.get(input);
        grads.set(input, previous === undefined ? grad : this.#sum(previous, grad));
      });
    }
    const out = new Map<Sym, Sym>();
    for (const target of wrt) {
      const grad = grads.get(target);
      if (grad !== undefined) out.set(target, grad);
    }
    return out;
  }

  #sum(a: Sym, b: Sym): Sym {
    return this.sym(this.g.op("Add", [a.value, b.value], {}, { shape: a.shape }), a.shape, true);
  }
}

function checkShape(input: Sym, grad: Sym): void {
  const same = input.shape.length === grad.shape.length && input.shape.every((dim, i) => dim === grad.shape[i]);
  if (!same) {
    throw new AppError(
      Code.INTERNAL,
      `gradient of ${input.value.name} has shape [${grad.shape.join(", ")}], expected [${input.shape.join(", ")}]`,
    );
  }
}
