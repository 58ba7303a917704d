import type { Value } from "@poseloop/onnx";
import { AppError, Code } from "@poseloop/core";
import { cast, type FloatType } from "../ops/basic.js";
import type { Sym, Tape } from "../tape.js";

/** What a layer's forward pass sees: the tape, the mode, and the graph values of parameters and buffers. */
export class ForwardContext {
  readonly tape: Tape;
  readonly mode: "train" | "eval";
  readonly #params: ReadonlyMap<string, Sym>;
  readonly #buffers: ReadonlyMap<string, Value>;
  /** Buffers the forward pass updated (BatchNorm running statistics in training mode). */
  readonly updatedBuffers = new Map<string, Value>();

  /**
   * Precision of the convolutions and matrix products: "float16" under mixed precision, where they run on fp16
   * copies of their inputs and weights and everything else (BatchNorm, activations, losses, the optimizer) stays
   * fp32 — the policy of PyTorch's CUDA autocast for these layers.
   */
  readonly computeType: FloatType;

  constructor(tape: Tape, mode: "train" | "eval", params: ReadonlyMap<string, Sym>, buffers: ReadonlyMap<string, Value>, options: { computeType?: FloatType } = {}) {
    this.tape = tape;
    this.mode = mode;
    this.#params = params;
    this.#buffers = buffers;
    this.computeType = options.computeType ?? "float32";
  }

  /**
   * `op` applied to its inputs in the compute precision, its output back in fp32 (identity at fp32). The casts
   * are ops of the tape: gradients flow back through them, so the op's backward runs in fp16 too.
   */
  autocast<T extends readonly (Sym | undefined)[]>(inputs: T, op: (...cast: T) => Sym): Sym {
    if (this.computeType === "float32") return op(...inputs);
    const low = inputs.map((input) => (input === undefined ? undefined : cast(this.tape, input, this.computeType))) as unknown as T;
    return cast(this.tape, op(...low), "float32");
  }

  param(name: string): Sym {
    const sym = this.#params.get(name);
    if (sym === undefined) throw new AppError(Code.INTERNAL, `parameter ${name} is not bound`);
    return sym;
  }

  buffer(name: string): Value {
    const value = this.#buffers.get(name);
    if (value === undefined) throw new AppError(Code.INTERNAL, `buffer ${name} is not bound`);
    return value;
  }
}
