import type { Value } from "@poseloop/onnx";
import { AppError, Code } from "@poseloop/core";
import type { Sym, Tape } from "../tape.js";

/** What a layer's forward pass sees: the tape, the mode, and the graph values of parameters and buffers. */
export class ForwardContext {
  readonly tape: Tape;
  readonly mode: "train" | "eval";
  readonly #params: ReadonlyMap<string, Sym>;
  readonly #buffers: ReadonlyMap<string, Value>;
  /** Buffers the forward pass updated (BatchNorm running statistics in training mode). */
  readonly updatedBuffers = new Map<string, Value>();

  constructor(tape: Tape, mode: "train" | "eval", params: ReadonlyMap<string, Sym>, buffers: ReadonlyMap<string, Value>) {
    this.tape = tape;
    this.mode = mode;
    this.#params = params;
    this.#buffers = buffers;
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
