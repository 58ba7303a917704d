import { AppError, Code, SeededRandom } from "@poseloop/core";

/** Random streams of a loader seed: one for the sample order, one for augmentation, never overlapping. */
export const ORDER_STREAM = 0x4f524452;
export const AUGMENT_STREAM = 0x41554721;

/** Batches in an epoch of `count` samples: the last partial batch is dropped or kept. */
export function batchCount(count: number, batchSize: number, dropLast: boolean): number {
  return dropLast ? Math.floor(count / batchSize) : Math.ceil(count / batchSize);
}

/**
 * The sample order of one epoch: 0..count−1, shuffled (Fisher–Yates) from (seed, epoch) when `shuffle`, so
 * any process computes the same order for the same epoch without remembering anything.
 */
export function epochOrder(count: number, seed: number, epoch: number, shuffle: boolean): Int32Array {
  if (!Number.isSafeInteger(epoch) || epoch < 0) throw new AppError(Code.INVALID_ARGUMENT, `epoch must be an integer >= 0, got ${epoch}`);
  const order = Int32Array.from({ length: count }, (_, i) => i);
  if (!shuffle) return order;
  const random = new SeededRandom(seed, ORDER_STREAM, epoch);
  for (let i = count - 1; i > 0; i--) {
    const j = random.int(0, i);
    const swap = order[i]!;
    order[i] = order[j]!;
    order[j] = swap;
  }
  return order;
}
