import type { Readable } from "node:stream";
import { AppError, Code } from "@poseloop/core";

/**
 * The framing of the PyTorch engine's protocol (services/trainer/pytorch/PROTOCOL.md): one JSON object per
 * line, optionally followed by the raw little-endian float32 bytes of the tensors its `payload` lists.
 */

/** What the engine may write on stdout; anything else is a protocol error. */
export const ENGINE_MESSAGE_TYPES: ReadonlySet<string> = new Set(["hello", "ready", "ok", "state", "weights", "step_result", "data_ready", "bye", "error"]);

/**
 * Longest line accepted. The longest legitimate one is a `state` answer's payload list for the biggest zoo
 * model (an entry per parameter, buffer, optimizer slot and accumulator: well under a megabyte); a stream
 * that runs past this without a newline is not speaking the protocol, and buffering it would only eat memory.
 */
export const MAX_LINE_BYTES = 4 * 1024 * 1024;

/** A tensor as a message's payload lists it: `[name, "f32", shape]`. */
export type PayloadEntry = readonly [name: string, dtype: "f32", shape: readonly number[]];

export interface EngineMessage {
  readonly type: string;
  readonly id?: number;
  readonly payload?: readonly PayloadEntry[];
  readonly [field: string]: unknown;
}

/** A tensor to send: its name, shape and values (shape's product of them). */
export interface OutgoingTensor {
  readonly name: string;
  readonly shape: readonly number[];
  readonly data: Float32Array;
}

/** One message as read: the line and its tensors by name (fresh, aligned copies), in payload order. */
export interface EngineFrame {
  readonly message: EngineMessage;
  readonly tensors: ReadonlyMap<string, Float32Array>;
}

const PREVIEW_CHARS = 80;

/** The AppError for anything that is not the protocol, quoting what was read. */
export function protocolError(what: string): AppError {
  return new AppError(Code.INTERNAL, `the pytorch engine broke its protocol: ${what}`);
}

function preview(bytes: Uint8Array | string): string {
  const text = typeof bytes === "string" ? bytes : Buffer.from(bytes.subarray(0, PREVIEW_CHARS * 4)).toString("utf8");
  // Control characters would garble a log line or a job's FAILED reason.
  const clean = [...text]
    .slice(0, PREVIEW_CHARS)
    .map((c) => (c.charCodeAt(0) < 0x20 || c === "\u007f" ? "?" : c))
    .join("");
  return JSON.stringify(clean);
}

const elementCount = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/**
 * A message and its tensors as the chunks to write, in order: the line, then each tensor's bytes (views of
 * the caller's arrays, not copies: a batch of images is tens of megabytes). Throws INVALID_ARGUMENT when a
 * tensor's length does not match its shape.
 */
export function encodeMessage(message: Readonly<Record<string, unknown>>, tensors: readonly OutgoingTensor[] = []): Uint8Array[] {
  for (const tensor of tensors) {
    const count = elementCount(tensor.shape);
    if (tensor.data.length !== count) throw new AppError(Code.INVALID_ARGUMENT, `${tensor.name}: expected ${count} values for [${tensor.shape.join(", ")}], got ${tensor.data.length}`);
  }
  const line = tensors.length === 0 ? message : { ...message, payload: tensors.map((tensor) => [tensor.name, "f32", [...tensor.shape]]) };
  return [Buffer.from(`${JSON.stringify(line)}\n`, "utf8"), ...tensors.map((tensor) => new Uint8Array(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength))];
}

/** encodeMessage's chunks as one buffer (tests, small messages). */
export function encodeMessageBytes(message: Readonly<Record<string, unknown>>, tensors: readonly OutgoingTensor[] = []): Buffer {
  return Buffer.concat(encodeMessage(message, tensors));
}

const NON_FINITE: Readonly<Record<string, number>> = { NaN: Number.NaN, Infinity: Number.POSITIVE_INFINITY, "-Infinity": Number.NEGATIVE_INFINITY };
const SENTINEL = "\u0000poseloop-non-finite:";

/**
 * JSON.parse that also reads the bare `NaN`, `Infinity` and `-Infinity` Python's json module writes for
 * non-finite floats (a diverged loss is NaN, and the trainer must see it as a number, not a broken line).
 */
export function parseEngineJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    if (!/NaN|Infinity/.test(text)) throw error;
  }
  // Rewrites the tokens outside strings into marked strings, which the reviver turns back into numbers.
  let out = "";
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i] as string;
    if (inString) {
      out += c;
      if (c === "\\") {
        out += text[i + 1] ?? "";
        i++;
      } else if (c === '"') inString = false;
      continue;
    }
    if (c === '"') {
      inString = true;
      out += c;
      continue;
    }
    const token = ["-Infinity", "Infinity", "NaN"].find((t) => text.startsWith(t, i));
    if (token !== undefined) {
      out += JSON.stringify(SENTINEL + token);
      i += token.length - 1;
      continue;
    }
    out += c;
  }
  return JSON.parse(out, (_key, value: unknown) => (typeof value === "string" && value.startsWith(SENTINEL) ? NON_FINITE[value.slice(SENTINEL.length)] : value)) as unknown;
}

function validPayload(payload: unknown): payload is PayloadEntry[] {
  return (
    Array.isArray(payload) &&
    payload.every(
      (entry: unknown) =>
        Array.isArray(entry) &&
        entry.length === 3 &&
        typeof entry[0] === "string" &&
        entry[1] === "f32" &&
        Array.isArray(entry[2]) &&
        (entry[2] as unknown[]).every((d) => typeof d === "number" && Number.isInteger(d) && d >= 0),
    )
  );
}

/**
 * Decodes the engine's stdout incrementally: `push` each chunk as it arrives and take the frames it
 * completed; `end` when the stream ends. Throws a protocol error (INTERNAL, quoting the first characters read)
 * on a line that is not a JSON object of a known type, an invalid payload list, or a line over
 * MAX_LINE_BYTES; `end` throws when the stream stopped inside a message.
 */
export class FrameDecoder {
  readonly #types: ReadonlySet<string>;
  readonly #maxLineBytes: number;
  #chunks: Buffer[] = [];
  #buffered = 0;
  /** Bytes of the buffered chunks already searched for a newline. */
  #scanned = 0;
  /** The message whose tensor bytes are awaited, and how many. */
  #pending: { message: EngineMessage; bytes: number } | undefined;

  constructor(options: { types?: ReadonlySet<string>; maxLineBytes?: number } = {}) {
    this.#types = options.types ?? ENGINE_MESSAGE_TYPES;
    this.#maxLineBytes = options.maxLineBytes ?? MAX_LINE_BYTES;
  }

  push(chunk: Uint8Array): EngineFrame[] {
    if (chunk.byteLength > 0) {
      this.#chunks.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      this.#buffered += chunk.byteLength;
    }
    const frames: EngineFrame[] = [];
    for (;;) {
      const frame = this.#next();
      if (frame === undefined) return frames;
      frames.push(frame);
    }
  }

  /** Whether a message was left incomplete; throws the protocol error that says so. */
  end(): void {
    if (this.#pending !== undefined) {
      throw protocolError(`the ${this.#pending.message.type} message announced ${this.#pending.bytes} bytes of tensors, the stream ended after ${this.#buffered}`);
    }
    if (this.#buffered > 0) throw protocolError(`the stream ended inside a line: ${preview(this.#take(this.#buffered))}`);
  }

  #next(): EngineFrame | undefined {
    if (this.#pending !== undefined) {
      const { message, bytes } = this.#pending;
      if (this.#buffered < bytes) return undefined;
      this.#pending = undefined;
      return { message, tensors: splitTensors(message.payload ?? [], this.#take(bytes)) };
    }
    const newline = this.#findNewline();
    if (newline < 0) {
      if (this.#buffered > this.#maxLineBytes) throw protocolError(`a line longer than ${this.#maxLineBytes} bytes: ${preview(this.#take(PREVIEW_CHARS * 4))}`);
      return undefined;
    }
    const line = this.#take(newline + 1).subarray(0, newline);
    if (line.byteLength > this.#maxLineBytes) throw protocolError(`a line longer than ${this.#maxLineBytes} bytes: ${preview(line)}`);
    const text = line.toString("utf8");
    let parsed: unknown;
    try {
      parsed = parseEngineJson(text);
    } catch {
      throw protocolError(preview(text));
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw protocolError(preview(text));
    const message = parsed as EngineMessage;
    if (typeof message.type !== "string" || !this.#types.has(message.type)) throw protocolError(`a message of unknown type: ${preview(text)}`);
    if (message.id !== undefined && !Number.isInteger(message.id)) throw protocolError(`a message with a non-integer id: ${preview(text)}`);
    if (message.payload === undefined) return { message, tensors: new Map() };
    if (!validPayload(message.payload)) throw protocolError(`a message with an invalid payload list: ${preview(text)}`);
    const bytes = message.payload.reduce((sum, [, , shape]) => sum + elementCount(shape) * 4, 0);
    this.#pending = { message, bytes };
    return this.#next();
  }

  /** Offset of the first newline in the buffered bytes, or -1; never searches a byte twice. */
  #findNewline(): number {
    let base = 0;
    for (const chunk of this.#chunks) {
      if (base + chunk.byteLength > this.#scanned) {
        const index = chunk.indexOf(10, Math.max(0, this.#scanned - base));
        if (index >= 0) return base + index;
      }
      base += chunk.byteLength;
    }
    this.#scanned = this.#buffered;
    return -1;
  }

  /** Removes the first `count` buffered bytes and returns them. */
  #take(count: number): Buffer {
    const n = Math.min(count, this.#buffered);
    const joined = this.#chunks.length === 1 ? (this.#chunks[0] as Buffer) : Buffer.concat(this.#chunks, this.#buffered);
    const taken = joined.subarray(0, n);
    const rest = joined.subarray(n);
    this.#chunks = rest.byteLength > 0 ? [rest] : [];
    this.#buffered = rest.byteLength;
    this.#scanned = 0;
    return taken;
  }
}

function splitTensors(payload: readonly PayloadEntry[], bytes: Buffer): Map<string, Float32Array> {
  const tensors = new Map<string, Float32Array>();
  let offset = 0;
  for (const [name, , shape] of payload) {
    const length = elementCount(shape) * 4;
    // A copy into its own buffer: Float32Array needs 4-byte alignment, and the stream's chunks have none.
    const data = new Float32Array(length / 4);
    new Uint8Array(data.buffer).set(bytes.subarray(offset, offset + length));
    tensors.set(name, data);
    offset += length;
  }
  return tensors;
}

/** The frames of a stream, in order; throws the decoder's protocol errors (also for a stream cut mid-message). */
export async function* readFrames(stream: Readable, decoder: FrameDecoder = new FrameDecoder()): AsyncGenerator<EngineFrame> {
  for await (const chunk of stream as AsyncIterable<Uint8Array>) yield* decoder.push(chunk);
  decoder.end();
}
