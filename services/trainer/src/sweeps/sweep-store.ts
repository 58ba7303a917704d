import { randomBytes } from "node:crypto";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import type { Bus, KeyValueStore } from "@poseloop/bus";
import { AppError, Code } from "@poseloop/core";
import { SweepSchema, SweepState, type Sweep } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";

export const SWEEPS_BUCKET = "poseloop-sweeps";

const sweepKey = (sweepId: string): string => `sweep.${sweepId}`;

export const isSweepOver = (state: SweepState): boolean => state === SweepState.SUCCEEDED || state === SweepState.CANCELLED || state === SweepState.FAILED;

/** "sweep-20261205-142039-3f9a1c": sortable by creation, unique, a valid KV token. */
export function newSweepId(now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15);
  return `sweep-${stamp}-${randomBytes(3).toString("hex")}`;
}

const SWEEP_ID = /^sweep-[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$/;
export function assertSweepId(sweepId: string): void {
  if (!SWEEP_ID.test(sweepId)) throw new AppError(Code.INVALID_ARGUMENT, `${JSON.stringify(sweepId)} is not a sweep id (sweep-YYYYMMDD-HHMMSS-xxxxxx)`);
}

/**
 * Sweep records in a key-value bucket every trainer shares: the spec, the trials with their job ids and
 * curves, the stage and the best values fixed so far, and which trainer drives the sweep (a lease). Every
 * change is a compare-and-set, so a driver and a CancelSweep never overwrite each other.
 */
export class SweepStore {
  readonly #kv: KeyValueStore;

  private constructor(kv: KeyValueStore) {
    this.#kv = kv;
  }

  static async open(bus: Bus): Promise<SweepStore> {
    return new SweepStore(await bus.keyValueStore(SWEEPS_BUCKET, { history: 1 }));
  }

  async create(sweep: Sweep): Promise<void> {
    await this.#kv.create(sweepKey(sweep.sweepId), toBinary(SweepSchema, sweep));
  }

  async get(sweepId: string): Promise<{ sweep: Sweep; revision: number } | undefined> {
    assertSweepId(sweepId);
    const entry = await this.#kv.get(sweepKey(sweepId));
    return entry === undefined ? undefined : { sweep: fromBinary(SweepSchema, entry.value), revision: entry.revision };
  }

  async require(sweepId: string): Promise<Sweep> {
    const found = await this.get(sweepId);
    if (found === undefined) throw new AppError(Code.NOT_FOUND, `no sweep ${sweepId}`);
    return found.sweep;
  }

  /**
   * Changes a sweep with compare-and-set, re-reading and re-applying `change` after a concurrent write;
   * `change` returns false to leave the record as it is.
   */
  async update(sweepId: string, change: (sweep: Sweep) => boolean | void): Promise<Sweep> {
    for (let attempt = 0; ; attempt++) {
      const found = await this.get(sweepId);
      if (found === undefined) throw new AppError(Code.NOT_FOUND, `no sweep ${sweepId}`);
      const { sweep, revision } = found;
      if (change(sweep) === false) return sweep;
      sweep.updatedAt = timestampNow();
      try {
        await this.#kv.update(sweepKey(sweepId), toBinary(SweepSchema, sweep), revision);
        return sweep;
      } catch (error) {
        if (!AppError.is(error, Code.ABORTED) || attempt > 20) throw error;
      }
    }
  }

  /** Writes `sweep` only if the record is still at `revision` (ABORTED otherwise); returns the new revision. */
  async replace(sweep: Sweep, revision: number): Promise<number> {
    sweep.updatedAt = timestampNow();
    return this.#kv.update(sweepKey(sweep.sweepId), toBinary(SweepSchema, sweep), revision);
  }

  /** Every sweep, newest first. */
  async list(): Promise<Sweep[]> {
    const sweeps: Sweep[] = [];
    for (const key of await this.#kv.keys("sweep.")) {
      const entry = await this.#kv.get(key);
      if (entry !== undefined) sweeps.push(fromBinary(SweepSchema, entry.value));
    }
    return sweeps.sort((a, b) => (a.sweepId < b.sweepId ? 1 : a.sweepId > b.sweepId ? -1 : 0));
  }

  /** The sweep now, then at every change, until it is over or `signal` aborts. */
  async *watch(sweepId: string, signal: AbortSignal): AsyncGenerator<Sweep> {
    assertSweepId(sweepId);
    const controller = new AbortController();
    try {
      for await (const entry of this.#kv.watch(sweepKey(sweepId), AbortSignal.any([signal, controller.signal]))) {
        const sweep = fromBinary(SweepSchema, entry.value);
        yield sweep;
        if (isSweepOver(sweep.state)) return;
      }
    } finally {
      controller.abort();
    }
  }
}
