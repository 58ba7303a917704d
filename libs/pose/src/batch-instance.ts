import { requireMinLength } from "./argument-checks.js";

export function checkInstanceIndex(index: number): void {
  if (!(Number.isInteger(index) && index >= 0)) throw new RangeError(`instance index must be an integer >= 0, got ${String(index)}`);
}

/** Instance `index`'s slice [index × size, (index + 1) × size) of a batch array: a view, not a copy. */
export function instanceSlice(array: Float32Array | undefined, index: number, size: number, what: string): Float32Array {
  if (array === undefined) throw new RangeError(`${what}: no destination array`);
  checkInstanceIndex(index);
  requireMinLength(array, (index + 1) * size, `${what} for instance ${index}`);
  return array.subarray(index * size, (index + 1) * size);
}
