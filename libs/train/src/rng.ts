import { SeededRandom } from "@poseloop/core";

/**
 * libs/train's former generator under its old name and method names, kept so that existing callers and seeds
 * give the same numbers: `SeededRandom.fromSeed32(seed)` with `normal()` drawing paired Box–Muller values
 * (`normalPaired`), `between(low, high)` for `uniform(low, high)` and `int(n)` for an integer in [0, n).
 * @deprecated New code uses `SeededRandom` from @poseloop/core: `SeededRandom.fromSeed32(seed)`.
 */
export class Rng extends SeededRandom {
  constructor(seed: number) {
    super(0);
    this.restoreState(SeededRandom.fromSeed32(seed).state);
  }

  static override fromState(state: readonly [number, number, number, number]): Rng {
    const rng = new Rng(0);
    rng.restoreState(state);
    return rng;
  }

  /** Standard normal (Box–Muller, both values used); with `mean` and `sd`, scaled. */
  override normal(mean = 0, sd = 1): number {
    const z = this.normalPaired();
    return mean === 0 && sd === 1 ? z : mean + sd * z;
  }

  /** Uniform in [low, high). */
  between(low: number, high: number): number {
    return this.uniform(low, high);
  }

  /** An integer in [0, n); with two arguments, one in [min, max] like SeededRandom's. */
  override int(n: number, max?: number): number {
    return max === undefined ? Math.floor(this.next() * n) : super.int(n, max);
  }
}
