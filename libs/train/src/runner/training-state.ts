import { AppError, Code } from "@poseloop/core";

/**
 * Everything needed to continue training exactly where it stopped: parameters, BatchNorm statistics,
 * optimizer slots, gradient accumulators and the step counters. Tensors are keyed by their graph input names
 * ("param:layer1.0.conv1.weight", "slot:exp_avg:...", ...).
 */
export interface TrainingState {
  /** Optimizer updates so far (under mixed precision, skipped ones included: see lossScaler). */
  readonly step: number;
  /** Micro-batches accumulated toward the next update (0 ≤ microStep < gradAccumSteps). */
  readonly microStep: number;
  readonly tensors: ReadonlyMap<string, Float32Array>;
  /** The dynamic loss scaler under mixed precision. */
  readonly lossScaler?: LossScalerState;
}

/** torch.cuda.amp.GradScaler's state: the scale, finite updates since it last changed, and updates skipped. */
export interface LossScalerState {
  readonly scale: number;
  readonly goodSteps: number;
  /** Updates skipped for non-finite gradients (they do not count as optimizer steps, e.g. for Adam's t). */
  readonly skippedSteps: number;
}

const MAGIC = "POSELOOP-STATE-1";

/**
 * Serializes a state bit-exactly: a JSON header (counters, tensor names and lengths) then the raw float32
 * data of every tensor, 4-byte aligned.
 */
export function encodeTrainingState(state: TrainingState): Uint8Array {
  const entries = [...state.tensors.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const header = new TextEncoder().encode(
    JSON.stringify({
      magic: MAGIC,
      step: state.step,
      microStep: state.microStep,
      ...(state.lossScaler === undefined ? {} : { lossScaler: state.lossScaler }),
      tensors: entries.map(([name, data]) => [name, data.length]),
    }),
  );
  const headerPadded = Math.ceil((header.length + 4) / 4) * 4;
  const total = headerPadded + entries.reduce((n, [, data]) => n + data.byteLength, 0);
  const out = new Uint8Array(total);
  new DataView(out.buffer).setUint32(0, header.length, true);
  out.set(header, 4);
  let offset = headerPadded;
  for (const [, data] of entries) {
    out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), offset);
    offset += data.byteLength;
  }
  return out;
}

export function decodeTrainingState(bytes: Uint8Array): TrainingState {
  const fail = (why: string): never => {
    throw new AppError(Code.DATA_LOSS, `not a PoseLoop training state: ${why}`);
  };
  if (bytes.byteLength < 8) fail("too short");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = view.getUint32(0, true);
  if (headerLength + 4 > bytes.byteLength) fail("truncated header");
  let header: { magic?: string; step?: number; microStep?: number; lossScaler?: LossScalerState; tensors?: [string, number][] };
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(4, 4 + headerLength))) as typeof header;
  } catch {
    return fail("unreadable header");
  }
  if (header.magic !== MAGIC || !Array.isArray(header.tensors)) fail("wrong magic");
  let offset = Math.ceil((headerLength + 4) / 4) * 4;
  const tensors = new Map<string, Float32Array>();
  for (const [name, length] of header.tensors ?? []) {
    if (offset + length * 4 > bytes.byteLength) fail(`tensor ${name} is truncated`);
    // Copy into a fresh, aligned buffer: the source may sit at any offset of a larger one. (Not bytes.slice: on
    // a Node Buffer that is a view of the same memory, not a copy.)
    tensors.set(name, new Float32Array(new Uint8Array(bytes.subarray(offset, offset + length * 4)).buffer));
    offset += length * 4;
  }
  if (offset !== bytes.byteLength) fail("trailing bytes");
  const scaler = header.lossScaler;
  if (scaler !== undefined && !(scaler.scale > 0 && Number.isInteger(scaler.goodSteps) && Number.isInteger(scaler.skippedSteps))) fail("invalid loss scaler");
  return { step: header.step ?? 0, microStep: header.microStep ?? 0, tensors, ...(scaler === undefined ? {} : { lossScaler: { scale: scaler.scale, goodSteps: scaler.goodSteps, skippedSteps: scaler.skippedSteps } }) };
}
