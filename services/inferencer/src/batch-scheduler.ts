import type { Histogram, ObservableCallback, ObservableGauge } from "@opentelemetry/api";
import { AppError, Code } from "@poseloop/core";
import type { FrameImage, FrameJob, FrameOutcome, ServingSpec } from "@poseloop/estimator";
import { decodePixels } from "./frame-cost.js";
import { batchSizeHistogram, queueDepthGauge } from "./metrics.js";
import type { ServingHandle, VersionSource } from "./serving-handle.js";
import type { InferenceWorkerPool } from "./worker-pool.js";

export interface ScheduledResult<Outcome = FrameOutcome, Spec = ServingSpec> {
  readonly outcome: Outcome;
  readonly handle: ServingHandle<Spec>;
  /** Time between submission and the batch leaving for a worker. */
  readonly queueUs: number;
}

export interface BatchSchedulerOptions<Job = FrameJob, Outcome = FrameOutcome> {
  /** People per batch; a frame with more people than this leaves alone. */
  readonly maxBatch: number;
  readonly maxWaitMs: number;
  /**
   * Frames with more pixels than this are large: each decodes in a batch of its own, so a 4K PNG never holds
   * light frames of its batch back, and large frames take at most all but one worker. Default 1920x1080.
   */
  readonly largeFramePixels?: number;
  /**
   * Which lane the scheduler batches for, as its metrics' `lane` attribute: "serving", or "candidate" during a
   * canary or shadow trial, so the two queues' depths are two series rather than one that flips between them.
   */
  readonly lane?: "serving" | "candidate" | "detector";
  /**
   * Runs a batch on a version in the workers; default the pose pipeline (`pool.infer`). The person detector's
   * lane runs `pool.detect`.
   */
  readonly run?: (version: string, jobs: readonly Job[]) => Promise<Outcome[]>;
  /** A job's share of `maxBatch`; default its people (boxes, or the whole frame), twice with the flip test. */
  readonly weigh?: (job: Job) => number;
}

/** A pose frame's people in a batch: its boxes (or the whole frame), doubled by the flip test's mirrored crops. */
function framePersons(job: FrameJob): number {
  return Math.max(1, job.boxes.length) * (job.flipTest ? 2 : 1);
}

/** The stream of frames submitted without one: they share one queue. */
const UNNAMED_STREAM = Symbol("unnamed stream");

interface Pending<Job, Outcome, Spec> {
  readonly job: Job;
  readonly persons: number;
  /** Frames above the large-frame size (slow to decode) run alone. */
  readonly large: boolean;
  readonly submitted: bigint;
  readonly resolve: (result: ScheduledResult<Outcome, Spec>) => void;
  readonly reject: (error: unknown) => void;
}

interface StreamQueue<Job, Outcome, Spec> {
  readonly items: Pending<Job, Outcome, Spec>[];
  /** When this stream last had a frame taken into a batch: the longest unserved stream goes first. */
  servedAt: number;
}

/**
 * Forms batches across frames and streams. A frame that finds a worker idle leaves at once (no added latency
 * at low load); frames that arrive while every worker is busy wait together and leave as one batch when a
 * worker frees up or `maxBatch` people are waiting, so under load each session run carries a full batch. With
 * `maxWaitMs` > 0 an idle pool still waits that long for company when frames come in bursts faster than it.
 * A frame's people always share a batch.
 *
 * Fairness: batches are filled round robin across streams, one frame per stream per round, starting with the
 * stream served longest ago, so a stream with many frames queued cannot fill every batch while others wait.
 * Decoding happens in the workers, inside the batch, so a large frame (slow to decode: more pixels than
 * `largeFramePixels`) leaves in a batch of its own, and large frames occupy at most all but one worker: light
 * frames of other streams wait for at most one large decode, never for a queue of them.
 *
 * One scheduler batches for one version source: pose frames by default; the person detector's lane batches
 * whole frames for the detector the same way (`run`, `weigh`), so detection is batched across streams too.
 */
export class BatchScheduler<Job extends { readonly image: FrameImage } = FrameJob, Outcome = FrameOutcome, Spec = ServingSpec> {
  readonly #pool: InferenceWorkerPool;
  readonly #versions: VersionSource<Spec>;
  readonly #maxBatch: number;
  readonly #maxWaitMs: number;
  readonly #largeFramePixels: number;
  readonly #run: (version: string, jobs: readonly Job[]) => Promise<Outcome[]>;
  readonly #weigh: (job: Job) => number;
  readonly #streams = new Map<unknown, StreamQueue<Job, Outcome, Spec>>();
  #waiting = 0;
  #pendingPersons = 0;
  #timer: NodeJS.Timeout | undefined;
  #inFlight = 0;
  #heavyInFlight = 0;
  #served = 0;
  readonly #batchSize: Histogram;
  readonly #queueDepth: ObservableGauge;
  readonly #lane: { readonly lane: "serving" | "candidate" | "detector" };
  readonly #observeQueue: ObservableCallback = (result) => result.observe(this.#waiting, this.#lane);

  constructor(pool: InferenceWorkerPool, versions: VersionSource<Spec>, options: BatchSchedulerOptions<Job, Outcome>) {
    this.#pool = pool;
    this.#versions = versions;
    // Without run and weigh the jobs are pose frames (the default Job and Outcome).
    this.#run = options.run ?? ((version, jobs) => pool.infer(version, jobs as unknown as FrameJob[]) as Promise<Outcome[]>);
    this.#weigh = options.weigh ?? (framePersons as unknown as (job: Job) => number);
    this.#maxBatch = options.maxBatch;
    this.#maxWaitMs = options.maxWaitMs;
    this.#largeFramePixels = options.largeFramePixels ?? 1920 * 1080;
    this.#lane = { lane: options.lane ?? "serving" };
    // The scheduler alone decides how large batches get, so a version must prove it runs this size before it
    // serves: a model with its batch fixed at 1 would otherwise fail every batched frame.
    pool.requireBatch(this.#maxBatch);
    this.#batchSize = batchSizeHistogram();
    this.#queueDepth = queueDepthGauge();
    this.#queueDepth.addCallback(this.#observeQueue);
  }

  /** Stops reporting the queue depth (the MeterProvider outlives a scheduler in tests). */
  close(): void {
    this.#queueDepth.removeCallback(this.#observeQueue);
  }

  /** Frames waiting for a batch. */
  get waiting(): number {
    return this.#waiting;
  }

  /** Queues a frame of `stream` (any value that identifies the stream; frames without one share a queue). */
  submit(job: Job, stream: unknown = UNNAMED_STREAM): Promise<ScheduledResult<Outcome, Spec>> {
    return new Promise((resolve, reject) => {
      const persons = this.#weigh(job);
      let queue = this.#streams.get(stream);
      if (queue === undefined) {
        queue = { items: [], servedAt: -1 };
        this.#streams.set(stream, queue);
      }
      queue.items.push({ job, persons, large: decodePixels(job.image) > this.#largeFramePixels, submitted: process.hrtime.bigint(), resolve, reject });
      this.#waiting++;
      this.#pendingPersons += persons;
      if (this.#pendingPersons >= this.#maxBatch || (this.#inFlight < this.#pool.size && this.#maxWaitMs === 0)) this.#flush();
      else if (this.#inFlight < this.#pool.size) this.#timer ??= setTimeout(() => this.#flush(), this.#maxWaitMs);
      // Otherwise every worker is busy: the frame leaves with the next batch when one frees up.
    });
  }

  #flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    while (this.#waiting > 0 && this.#inFlight < this.#pool.size) {
      const batch = this.#takeBatch();
      if (batch === undefined) break;
      this.#dispatch(batch.items, batch.heavy);
    }
    // Frames still waiting leave when a batch comes back (every batch's end flushes).
  }

  /** The next batch, or undefined when only large frames wait and they may take no more workers now. */
  #takeBatch(): { items: Pending<Job, Outcome, Spec>[]; heavy: boolean } | undefined {
    // One worker stays free of large frames (when there are two or more), so light frames never wait for a
    // large frame's decode if another worker could run them.
    const heavyAllowed = this.#heavyInFlight < Math.max(1, this.#pool.size - 1);
    const order = [...this.#streams.values()].sort((a, b) => a.servedAt - b.servedAt);
    const batch: Pending<Job, Outcome, Spec>[] = [];
    const closed = new Set<StreamQueue<Job, Outcome, Spec>>();
    let persons = 0;
    let added = true;
    while (added) {
      added = false;
      for (const queue of order) {
        const next = queue.items[0];
        if (next === undefined || closed.has(queue)) continue;
        const fits = batch.length === 0
          ? heavyAllowed || !next.large
          : !next.large && !(batch[0] as Pending<Job, Outcome, Spec>).large && persons + next.persons <= this.#maxBatch;
        if (!fits) {
          // Taking a later frame of this stream would reorder it; the stream waits for the next batch.
          closed.add(queue);
          continue;
        }
        queue.items.shift();
        queue.servedAt = this.#served++;
        batch.push(next);
        persons += next.persons;
        added = true;
      }
    }
    if (batch.length === 0) return undefined;
    for (const [stream, queue] of this.#streams) if (queue.items.length === 0) this.#streams.delete(stream);
    this.#waiting -= batch.length;
    this.#pendingPersons -= persons;
    return { items: batch, heavy: (batch[0] as Pending<Job, Outcome, Spec>).large };
  }

  #dispatch(batch: Pending<Job, Outcome, Spec>[], heavy: boolean): void {
    const handle = this.#versions.acquire();
    if (handle === undefined) {
      const error = new AppError(Code.UNAVAILABLE, "no model version is loaded yet");
      for (const item of batch) item.reject(error);
      return;
    }
    this.#inFlight++;
    if (heavy) this.#heavyInFlight++;
    this.#batchSize.record(batch.length, this.#lane);
    const left = process.hrtime.bigint();
    this.#run(handle.version, batch.map((item) => item.job)).then(
      (outcomes) => {
        batch.forEach((item, i) => item.resolve({ outcome: outcomes[i] as Outcome, handle, queueUs: Number((left - item.submitted) / 1000n) }));
      },
      (error: unknown) => {
        for (const item of batch) item.reject(error);
      },
    ).finally(() => {
      this.#versions.release(handle);
      this.#inFlight--;
      if (heavy) this.#heavyInFlight--;
      if (this.#waiting > 0) this.#flush();
    });
  }
}
