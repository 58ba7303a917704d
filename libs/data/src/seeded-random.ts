import { AppError, Code } from "@poseloop/core";

/** One step of splitmix32: spreads a seed (even 0, 1, 2...) over all 32 bits. */
function splitmix32(state: number): [next: number, value: number] {
  const next = (state + 0x9e3779b9) | 0;
  let z = next;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return [next, (z ^ (z >>> 16)) >>> 0];
}

/**
 * A deterministic pseudo-random generator (xoshiro128**, seeded through splitmix32): the same seed gives the
 * same sequence on every machine and Node version, which is what makes a synthetic dataset reproducible.
 * Math.random is never used. Not for cryptography.
 */
export class SeededRandom {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

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
    const take = (): number => {
      let out: number;
      [state, out] = splitmix32(state);
      return out | 0;
    };
    this.s0 = take();
    this.s1 = take();
    this.s2 = take();
    this.s3 = take();
    // The all-zero state is xoshiro's only fixed point.
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** An independent generator for sub-stream `stream` (e.g. one per image), leaving this one untouched. */
  derive(stream: number): SeededRandom {
    return new SeededRandom(this.s0 ^ this.s2, this.s1 ^ this.s3, stream);
  }

  /** The next 32 random bits as an unsigned integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.nextUint32() / 4294967296;
  }

  /** Uniform in [min, max). */
  uniform(min: number, max: number): number {
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

  /** Normally distributed (Box–Muller). */
  normal(mean = 0, sd = 1): number {
    const u = 1 - this.next();
    const v = this.next();
    return mean + sd * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
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
