import { AppError, Code } from "@poseloop/core";
import type { RunResultsState } from "./run-results.js";

/** Bumped when the checkpoint layout or the meaning of its fields changes. */
export const CHECKPOINT_FORMAT = "POSELOOP-CHECKPOINT-1";
/** The training code's version, recorded in every checkpoint (a resume under other code is refused). */
export const TRAINER_CODE_VERSION = "0.1.0";

/** Validation results of one epoch, kept in the checkpoint so a resumed run knows its curve and its best. */
export interface EpochMetrics {
  readonly epoch: number;
  readonly step: number;
  readonly ap: number;
  /** The full KeypointMetrics message, binary, base64. */
  readonly metrics: string;
}

/** Where a run stands: enough, with the training state, to continue bit for bit. */
export interface CheckpointHeader {
  readonly format: typeof CHECKPOINT_FORMAT;
  readonly codeVersion: string;
  readonly jobId: string;
  readonly checkpointId: string;
  /** The TrainConfig the run trains with, binary, base64 (a resume refuses one that shapes the state otherwise). */
  readonly config: string;
  /** Epochs completed: training continues in epoch `epoch` at batch `nextBatch`. */
  readonly epoch: number;
  readonly nextBatch: number;
  /** Optimizer steps taken. */
  readonly step: number;
  readonly bestAp: number;
  readonly bestEpoch: number;
  readonly history: readonly EpochMetrics[];
  /** The run's curves (results.csv and the plots) so far; absent in checkpoints written before they were kept. */
  readonly results?: RunResultsState;
  readonly createdAt: string;
}

/**
 * A checkpoint file: magic, a JSON header (position, best metric, config, code version) and the training
 * state (weights, optimizer slots, BatchNorm statistics, accumulators, step counters) as encodeTrainingState
 * writes it. The data order and augmentation are pure functions of (seed, epoch, batch), so the position is
 * their whole state.
 */
export function encodeCheckpoint(header: Omit<CheckpointHeader, "format" | "codeVersion">, state: Uint8Array): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify({ format: CHECKPOINT_FORMAT, codeVersion: TRAINER_CODE_VERSION, ...header }));
  const out = new Uint8Array(8 + json.length + state.length);
  const view = new DataView(out.buffer);
  out.set(new TextEncoder().encode("PLCK"), 0);
  view.setUint32(4, json.length, true);
  out.set(json, 8);
  out.set(state, 8 + json.length);
  return out;
}

export function decodeCheckpoint(bytes: Uint8Array): { header: CheckpointHeader; state: Uint8Array } {
  const fail = (why: string): never => {
    throw new AppError(Code.DATA_LOSS, `not a PoseLoop checkpoint: ${why}`);
  };
  if (bytes.byteLength < 8 || new TextDecoder().decode(bytes.subarray(0, 4)) !== "PLCK") fail("wrong magic");
  const length = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(4, true);
  if (8 + length > bytes.byteLength) fail("truncated header");
  let header: CheckpointHeader;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + length))) as CheckpointHeader;
  } catch {
    return fail("unreadable header");
  }
  const format: unknown = (header as { format?: unknown }).format;
  if (format !== CHECKPOINT_FORMAT) fail(`format ${JSON.stringify(format)}, this trainer reads ${CHECKPOINT_FORMAT}`);
  return { header, state: bytes.subarray(8 + length) };
}

/** "e0003-s000120": epochs completed and steps taken, sortable. */
export function checkpointId(epoch: number, step: number, nextBatch: number): string {
  const base = `e${String(epoch).padStart(4, "0")}-s${String(step).padStart(7, "0")}`;
  return nextBatch === 0 ? base : `${base}-b${String(nextBatch).padStart(5, "0")}`;
}
