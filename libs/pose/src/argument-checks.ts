// Checks at the package's entry points. @poseloop/pose depends on nothing of ours (no AppError), so a bad
// argument is a RangeError (a value out of its domain: NaN, a zero-size box, a short array) or a TypeError
// (the wrong kind of value) whose message names the argument; callers at a service edge map either to
// INVALID_ARGUMENT.

export function requireFinite(value: number, what: string): void {
  if (!Number.isFinite(value)) throw new RangeError(`${what} must be a finite number, got ${String(value)}`);
}

export function requirePositive(value: number, what: string): void {
  if (!(Number.isFinite(value) && value > 0)) throw new RangeError(`${what} must be a positive number, got ${String(value)}`);
}

export function requireNonNegative(value: number, what: string): void {
  if (!(Number.isFinite(value) && value >= 0)) throw new RangeError(`${what} must be a finite number >= 0, got ${String(value)}`);
}

export function requirePositiveInteger(value: number, what: string): void {
  if (!(Number.isInteger(value) && value > 0)) throw new RangeError(`${what} must be a positive integer, got ${String(value)}`);
}

export function requireLength(values: ArrayLike<number>, length: number, what: string): void {
  if (values.length !== length) throw new RangeError(`${what} must have ${length} values, got ${values.length}`);
}

export function requireMinLength(values: ArrayLike<number>, length: number, what: string): void {
  if (values.length < length) throw new RangeError(`${what} must have at least ${length} values, got ${values.length}`);
}

/** Every value finite; the message names the first bad one by its index. */
export function requireAllFinite(values: ArrayLike<number>, what: string, count = values.length): void {
  for (let i = 0; i < count; i++) {
    const value = values[i] as number;
    if (!Number.isFinite(value)) throw new RangeError(`${what}[${i}] must be a finite number, got ${String(value)}`);
  }
}
