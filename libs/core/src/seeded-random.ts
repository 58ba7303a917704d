import { AppError, Code } from "./app-error.js";

/** The four 32-bit words of a generator's state, as a checkpoint stores them. */
export type SeededRandomState = readonly [number, number, number, number];

/** One step of splitmix32: spreads a seed (even 0, 1, 2...) over all 32 bits. */
function splitmix32(state: number): [next: number, value: number] {
  const next = (state + 0x9e3779b9) | 0;
  let z = next;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return [next, (z ^ (z >>> 16)) >>> 0];
}

/** splitmix32's next four outputs from `state`, as xoshiro state words. */
function splitmixWords(state: number): [number, number, number, number] {
  const words: number[] = [];
  for (let i = 0; i < 4; i++) {
    let out: number;
    [state, out] = splitmix32(state);
    words.push(out | 0);
  }
  return words as [number, number, number, number];
}

/**
 * A deterministic pseudo-random generator (xoshiro128**, seeded through splitmix32): the same seed gives the
 * same sequence on every machine and Node version, which is what makes synthetic datasets, weight
 * initialization and training runs reproducible. Math.random is never used. Not for cryptography.
 *
 * Two seedings, because committed seeds depend on both: `new SeededRandom(seed, ...streams)` hashes every
 * number in (datasets, augmentation, scenes); `SeededRandom.fromSeed32(seed)` takes splitmix32's first four
 * outputs from the seed itself (weight initialization and everything else in libs/train).
 */
export class SeededRandom {
  #s0: number;
  #s1: number;
  #s2: number;
  #s3: number;
  /** The second value of the last Box–Muller pair `normalPaired` drew. */
  #spare: number | undefined;

  /** `seed` is any safe integer; streams derived with `derive` are independent of each other. */
  constructor(seed: number, ...streams: number[]) {
    for (const value of [seed, ...streams]) {
      if (!Number.isSafeInteger(value)) throw new AppError(Code.INVALID_ARGUMENT, `a random seed must be a safe integer, got ${value}`);
    }
    // Hash-chain every 32-bit half of every number into the state, so nearby seeds and streams diverge at once.
    let state = 0x2545f491;
    for (const value of [seed, ...streams]) {
      for (const word of [value >>> 0, Math.floor(value / 2 ** 32) >>> 0]) state = splitmix32(state ^ word)[1] | 0;
    }
    [this.#s0, this.#s1, this.#s2, this.#s3] = splitmixWords(state);
    // The all-zero state is xoshiro's only fixed point.
    if ((this.#s0 | this.#s1 | this.#s2 | this.#s3) === 0) this.#s0 = 1;
  }

  /**
   * The generator whose state is splitmix32's first four outputs from `seed` (taken modulo 2^32): libs/train's
   * stream, which its weight initialization and tests were seeded with.
   */
  static fromSeed32(seed: number): SeededRandom {
    return SeededRandom.fromState(splitmixWords(seed | 0));
  }

  /** A generator continuing from `state` (a checkpoint's). */
  static fromState(state: SeededRandomState): SeededRandom {
    const random = new SeededRandom(0);
    random.restoreState(state);
    return random;
  }

  /** The state, to save in a checkpoint (unsigned words). */
  get state(): SeededRandomState {
    return [this.#s0 >>> 0, this.#s1 >>> 0, this.#s2 >>> 0, this.#s3 >>> 0];
  }

  /** Continues from `state`; a pending second normal value is dropped. */
  protected restoreState(state: SeededRandomState): void {
    [this.#s0, this.#s1, this.#s2, this.#s3] = state.map((word) => word | 0) as [number, number, number, number];
    this.#spare = undefined;
  }

  /** An independent generator for sub-stream `stream` (e.g. one per image), leaving this one untouched. */
  derive(stream: number): SeededRandom {
    return new SeededRandom(this.#s0 ^ this.#s2, this.#s1 ^ this.#s3, stream);
  }

  /** The next 32 random bits as an unsigned integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.#s1, 5), 7), 9) >>> 0;
    const t = this.#s1 << 9;
    this.#s2 ^= this.#s0;
    this.#s3 ^= this.#s1;
    this.#s1 ^= this.#s2;
    this.#s0 ^= this.#s3;
    this.#s2 ^= t;
    this.#s3 = rotl(this.#s3, 11);
    return result;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.nextUint32() / 4294967296;
  }

  /** Uniform in [min, max); [0, 1) by default. */
  uniform(min = 0, max = 1): number {
    return min + (max - min) * this.next();
  }

  /** A uniform integer in [min, max], both included. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /** Normally distributed: one Box–Muller value per two draws (the datasets' stream). */
  normal(mean = 0, sd = 1): number {
    const u = 1 - this.next();
    const v = this.next();
    return mean + sd * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  /**
   * Standard normal from Box–Muller with both values of each pair used, the second on the next call (half the
   * draws of `normal`, and a different stream: libs/train's weight initialization).
   */
  normalPaired(): number {
    if (this.#spare !== undefined) {
      const spare = this.#spare;
      this.#spare = undefined;
      return spare;
    }
    let u = this.next();
    while (u <= Number.EPSILON) u = this.next();
    const v = this.next();
    const radius = Math.sqrt(-2 * Math.log(u));
    this.#spare = radius * Math.sin(2 * Math.PI * v);
    return radius * Math.cos(2 * Math.PI * v);
  }

  /** One element, uniformly. */
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new AppError(Code.INVALID_ARGUMENT, "cannot pick from an empty list");
    return items[Math.floor(this.next() * items.length)]!;
  }

  /** An index chosen with probability proportional to its weight. */
  weightedIndex(weights: readonly number[]): number {
    const total = weights.reduce((sum, w) => sum + Math.max(0, w), 0);
    let r = this.next() * total;
    for (let i = 0; i < weights.length; i++) {
      r -= Math.max(0, weights[i]!);
      if (r < 0) return i;
    }
    return weights.length - 1;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
