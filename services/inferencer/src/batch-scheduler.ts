import { AppError, Code } from "@poseloop/core";
import type { FrameJob, FrameOutcome } from "@poseloop/estimator";
import type { ServingHandle, VersionSource } from "./serving-handle.js";
import type { InferenceWorkerPool } from "./worker-pool.js";

export interface ScheduledResult {
  readonly outcome: FrameOutcome;
  readonly handle: ServingHandle;
  /** Time between submission and the batch leaving for a worker. */
  readonly queueUs: number;
}

interface Pending {
  readonly job: FrameJob;
  readonly persons: number;
  readonly submitted: bigint;
  readonly resolve: (result: ScheduledResult) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * Forms batches across frames and streams. A frame that finds a worker idle leaves at once (no added latency
 * at low load); frames that arrive while every worker is busy wait together and leave as one batch when a
 * worker frees up or `maxBatch` people are waiting, so under load each session run carries a full batch. With
 * `maxWaitMs` > 0 an idle pool still waits that long for company when frames come in bursts faster than it.
 * A frame's people always share a batch.
 */
export class BatchScheduler {
  readonly #pool: InferenceWorkerPool;
  readonly #versions: VersionSource;
  readonly #maxBatch: number;
  readonly #maxWaitMs: number;
  #pending: Pending[] = [];
  #pendingPersons = 0;
  #timer: NodeJS.Timeout | undefined;
  #inFlight = 0;

  constructor(pool: InferenceWorkerPool, versions: VersionSource, options: { maxBatch: number; maxWaitMs: number }) {
    this.#pool = pool;
    this.#versions = versions;
    this.#maxBatch = options.maxBatch;
    this.#maxWaitMs = options.maxWaitMs;
  }

  /** Frames waiting for a batch. */
  get waiting(): number {
    return this.#pending.length;
  }

  submit(job: FrameJob): Promise<ScheduledResult> {
    return new Promise((resolve, reject) => {
      const persons = Math.max(1, job.boxes.length) * (job.flipTest ? 2 : 1);
      this.#pending.push({ job, persons, submitted: process.hrtime.bigint(), resolve, reject });
      this.#pendingPersons += persons;
      if (this.#pendingPersons >= this.#maxBatch || (this.#inFlight < this.#pool.size && this.#maxWaitMs === 0)) this.#flush();
      else if (this.#inFlight < this.#pool.size) this.#timer ??= setTimeout(() => this.#flush(), this.#maxWaitMs);
      // Otherwise every worker is busy: the frame leaves with the next batch when one frees up.
    });
  }

  #flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    while (this.#pending.length > 0 && this.#inFlight < this.#pool.size) {
      const batch: Pending[] = [];
      let persons = 0;
      while (this.#pending.length > 0) {
        const next = this.#pending[0] as Pending;
        if (batch.length > 0 && persons + next.persons > this.#maxBatch) break;
        batch.push(next);
        persons += next.persons;
        this.#pending.shift();
      }
      this.#pendingPersons -= persons;
      this.#dispatch(batch);
    }
    if (this.#pending.length > 0) this.#timer ??= setTimeout(() => this.#flush(), this.#maxWaitMs);
  }

  #dispatch(batch: Pending[]): void {
    const handle = this.#versions.acquire();
    if (handle === undefined) {
      const error = new AppError(Code.UNAVAILABLE, "no model version is loaded yet");
      for (const item of batch) item.reject(error);
      return;
    }
    this.#inFlight++;
    const left = process.hrtime.bigint();
    this.#pool.infer(handle.version, batch.map((item) => item.job)).then(
      (outcomes) => {
        batch.forEach((item, i) => item.resolve({ outcome: outcomes[i] as FrameOutcome, handle, queueUs: Number((left - item.submitted) / 1000n) }));
      },
      (error: unknown) => {
        for (const item of batch) item.reject(error);
      },
    ).finally(() => {
      this.#versions.release(handle);
      this.#inFlight--;
      if (this.#pending.length > 0) this.#flush();
    });
  }
}
