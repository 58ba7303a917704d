import type { FrameJob, FrameOutcome } from "@poseloop/estimator";
import { describe, expect, it } from "vitest";
import { BatchScheduler, type BatchSchedulerOptions } from "./batch-scheduler.js";
import type { ServingHandle, VersionSource } from "./serving-handle.js";
import type { InferenceWorkerPool } from "./worker-pool.js";

const UHD: [number, number] = [3840, 2160];

/** A pool whose batches finish when the test says so; it records which frames each batch carried. */
class FakePool {
  readonly batches: { labels: string[]; finish: () => void }[] = [];
  warmUpBatch = 1;
  readonly #labels: Map<FrameJob, string>;

  constructor(readonly size: number, labels: Map<FrameJob, string>) {
    this.#labels = labels;
  }

  requireBatch(people: number): void {
    this.warmUpBatch = Math.max(this.warmUpBatch, people);
  }

  infer(_version: string, frames: readonly FrameJob[]): Promise<FrameOutcome[]> {
    return new Promise((resolve) => {
      const outcomes = frames.map((): FrameOutcome => ({ ok: true, width: 1, height: 1, persons: [], timings: { decodeUs: 0, preprocessUs: 0, inferenceUs: 0, postprocessUs: 0 } }));
      this.batches.push({ labels: frames.map((f) => this.#labels.get(f) ?? "?"), finish: () => resolve(outcomes) });
    });
  }
}

const handle = { version: "v1" } as ServingHandle;
const versions: VersionSource = { acquire: () => handle, release: () => undefined };
const settled = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function setUp(workers: number, options: Partial<BatchSchedulerOptions> = {}) {
  const labels = new Map<FrameJob, string>();
  const pool = new FakePool(workers, labels);
  const scheduler = new BatchScheduler(pool as unknown as InferenceWorkerPool, versions, { maxBatch: 4, maxWaitMs: 0, ...options });
  const done: string[] = [];
  /** Submits frame `label` of `stream`, of `size` pixels (what the worker will decode). */
  const submit = (stream: string, label: string, size: [number, number] = [640, 480]): void => {
    const [width, height] = size;
    const job: FrameJob = { image: { kind: "raw", width, height, format: "GRAY8", stride: width, data: new Uint8Array(0) }, boxes: [], flipTest: false, minKeypointScore: 0, maxPersons: 0 };
    labels.set(job, label);
    void scheduler.submit(job, stream).then(() => done.push(label));
  };
  return { pool, scheduler, submit, done };
}

describe("BatchScheduler fairness", () => {
  it("a stream with many frames queued does not keep another stream's frame out of the next batch", async () => {
    const { pool, submit } = setUp(1);
    submit("busy", "a0");
    for (let i = 1; i <= 12; i++) submit("busy", `a${i}`);
    submit("quiet", "b0");
    expect(pool.batches).toHaveLength(1);
    pool.batches[0]?.finish();
    await settled();
    expect(pool.batches).toHaveLength(2);
    expect(pool.batches[1]?.labels).toContain("b0");
    expect(pool.batches[1]?.labels).toHaveLength(4);
  });

  it("fills batches round robin across streams, each stream's frames in order", async () => {
    const { pool, submit } = setUp(1, { maxBatch: 3 });
    submit("x", "first");
    for (const s of ["a", "b", "c"]) for (let i = 0; i < 4; i++) submit(s, `${s}${i}`);
    for (let n = 0; n < 5; n++) {
      pool.batches.at(-1)?.finish();
      await settled();
    }
    const served = pool.batches.slice(1).map((b) => b.labels);
    expect(served[0]?.map((l) => l[0]).sort()).toEqual(["a", "b", "c"]);
    expect(served.flat()).toHaveLength(12);
    for (const s of ["a", "b", "c"]) expect(served.flat().filter((l) => l.startsWith(s))).toEqual([`${s}0`, `${s}1`, `${s}2`, `${s}3`]);
  });

  it("a large frame never holds light frames of other streams in its batch", async () => {
    const { pool, submit } = setUp(1);
    submit("light", "l0");
    submit("heavy", "h0", UHD);
    submit("heavy", "h1", UHD);
    submit("light", "l1");
    for (let n = 0; n < 4; n++) {
      pool.batches.at(-1)?.finish();
      await settled();
    }
    for (const batch of pool.batches) {
      if (batch.labels.some((l) => l.startsWith("h"))) expect(batch.labels).toHaveLength(1);
    }
    // The light frame waits behind at most one large frame, not behind all of them.
    const order = pool.batches.map((b) => b.labels.join("+"));
    expect(order.indexOf("l1")).toBeLessThan(order.indexOf("h1"));
  });

  it("large frames leave a worker free, so a light frame from another stream starts at once", async () => {
    const { pool, submit, done } = setUp(2);
    for (let i = 0; i < 3; i++) submit("heavy", `h${i}`, UHD);
    expect(pool.batches.map((b) => b.labels)).toEqual([["h0"]]);
    submit("light", "l0");
    expect(pool.batches.map((b) => b.labels)).toEqual([["h0"], ["l0"]]);
    // The large frames all get their turn, one worker at a time.
    for (let n = 0; n < 6; n++) {
      for (const batch of pool.batches) batch.finish();
      await settled();
    }
    expect(pool.batches.map((b) => b.labels)).toEqual([["h0"], ["l0"], ["h1"], ["h2"]]);
    expect(done.sort()).toEqual(["h0", "h1", "h2", "l0"]);
  });

  it("asks the pool to prove every version at the largest batch it will send", () => {
    const { pool } = setUp(1, { maxBatch: 16 });
    expect(pool.warmUpBatch).toBe(16);
  });
});
