import { createHash, randomBytes } from "node:crypto";
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import type { Bus, EventBus, KeyValueStore } from "@poseloop/bus";
import { AppError, AsyncQueue, Code, silentLogger, sleep, type Logger } from "@poseloop/core";
import { JobEventSchema, JobSchema, JobState, type Job, type JobEvent } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { recordJobTransition } from "../trainer-metrics.js";

export const JOBS_BUCKET = "poseloop-jobs";
export const TRAINING_QUEUE = "poseloop-training";

const jobKey = (jobId: string): string => `job.${jobId}`;
const eventPrefix = (jobId: string): string => `ev.${jobId}.`;
const eventKey = (jobId: string, sequence: bigint): string => `${eventPrefix(jobId)}${sequence.toString().padStart(10, "0")}`;
const idempotencyKey = (key: string): string => `idem.${createHash("sha256").update(key).digest("hex").slice(0, 40)}`;
export const jobEventsSubject = (jobId: string): string => `poseloop.events.jobs.${jobId}`;

const TERMINAL = new Set([JobState.CANCELLED, JobState.SUCCEEDED, JobState.FAILED]);
export const isTerminal = (state: JobState): boolean => TERMINAL.has(state);

/**
 * Who runs a job: its record's `attempt` is the owner epoch, bumped by every takeover (a compare-and-set), so a
 * trainer that was silent long enough to be replaced finds its attempt outdated at its next write.
 */
export interface JobOwner {
  readonly workerId: string;
  readonly attempt: number;
}

/** A write by a trainer whose attempt of the job was taken over by another: refused, and its run stops. */
export class StaleOwnerError extends AppError {
  constructor(jobId: string, owner: JobOwner, current: Job) {
    super(
      Code.ABORTED,
      `job ${jobId} is now attempt ${current.attempt} on ${current.workerId || "no trainer"} (${JobState[current.state]}); ${owner.workerId}'s attempt ${owner.attempt} is stale and writes nothing more`,
    );
  }
}

/**
 * The bus is down, or coming back: a restarted nats-server answers "jetstream is not enabled" while it recovers
 * its streams (INTERNAL, as the bus cannot tell that from a server without JetStream; this store's bucket
 * existed, so here it is the restart).
 */
function isOutage(error: unknown): boolean {
  if (AppError.is(error, Code.UNAVAILABLE)) return true;
  const cause = error instanceof Error ? error.cause : undefined;
  return AppError.is(error, Code.INTERNAL) && cause instanceof Error && /jetstream is not enabled/i.test(cause.message);
}

function checkOwner(jobId: string, job: Job, owner: JobOwner | undefined): void {
  if (owner === undefined) return;
  if (job.attempt !== owner.attempt || job.workerId !== owner.workerId) throw new StaleOwnerError(jobId, owner, job);
}

/** "job-20261127-231509-3f9a1c": sortable by creation, unique, a valid KV token and NATS subject token. */
export function newJobId(now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15);
  return `job-${stamp}-${randomBytes(3).toString("hex")}`;
}

const JOB_ID = /^job-[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$/;
export function assertJobId(jobId: string): void {
  if (!JOB_ID.test(jobId)) throw new AppError(Code.INVALID_ARGUMENT, `${JSON.stringify(jobId)} is not a job id (job-YYYYMMDD-HHMMSS-xxxxxx)`);
}

/**
 * Job records and their event logs in a key-value bucket every trainer shares: a record per job (every change
 * a compare-and-set), an entry per event (so WatchJob can replay from any sequence), and live events on the
 * event bus. Whoever runs a job is the only writer of its events.
 */
export class JobStore {
  readonly #kv: KeyValueStore;
  readonly #events: EventBus;
  readonly #outlastMs: number;
  readonly #logger: Logger;

  private constructor(kv: KeyValueStore, events: EventBus, outlastMs: number, logger: Logger) {
    this.#kv = kv;
    this.#events = events;
    this.#outlastMs = outlastMs;
    this.#logger = logger;
  }

  /**
   * `outlastOutagesMs` (default 0): how long a write that finds the bus UNAVAILABLE waits and retries, with
   * backoff, before it fails. A training run's store sets it, so that a brief NATS outage pauses the run
   * instead of throwing away its epoch; the API's store fails fast, as its callers have deadlines.
   */
  static async open(bus: Bus, options: { outlastOutagesMs?: number; logger?: Logger } = {}): Promise<JobStore> {
    const [kv, events] = await Promise.all([bus.keyValueStore(JOBS_BUCKET, { history: 1 }), bus.events()]);
    return new JobStore(kv, events, options.outlastOutagesMs ?? 0, options.logger ?? silentLogger);
  }

  /**
   * Runs `op`, and while it fails with UNAVAILABLE runs it again after a growing pause (up to the store's
   * `outlastOutagesMs`); `retry` tells `op` that an earlier try may have landed without its answer.
   */
  async outlast<T>(what: string, op: (retry: boolean) => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.#outlastMs;
    let pause = 100;
    for (let retry = false; ; retry = true) {
      try {
        return await op(retry);
      } catch (error) {
        if (!isOutage(error) || Date.now() + pause > deadline) throw error;
        this.#logger.warn("the bus is unavailable; the job's write waits and tries again", { what, retry_in_ms: pause, err: error });
        await sleep(pause);
        pause = Math.min(pause * 2, 5_000);
      }
    }
  }

  /** Creates a job; with an idempotency key seen before, returns the job created then instead. */
  async create(job: Job): Promise<{ job: Job; existing: boolean }> {
    let reservation: { key: string; revision: number } | undefined;
    if (job.idempotencyKey !== "") {
      const key = idempotencyKey(job.idempotencyKey);
      try {
        reservation = { key, revision: await this.#kv.create(key, encodeReservation(job.jobId, Date.now())) };
      } catch (error) {
        if (!AppError.is(error, Code.ABORTED, Code.ALREADY_EXISTS)) throw error;
        const entry = await this.#kv.get(key);
        const held = entry === undefined ? undefined : decodeReservation(entry.value);
        const existing = held === undefined ? undefined : await this.get(held.jobId);
        if (existing !== undefined) return { job: existing.job, existing: true };
        if (entry === undefined || held === undefined || Date.now() - held.at < RESERVATION_MS) {
          throw new AppError(Code.ABORTED, "a job with this idempotency key is being created; retry");
        }
        // The reservation's job was never written (its writer failed or died): take the key over.
        reservation = { key, revision: await this.#kv.update(key, encodeReservation(job.jobId, Date.now()), entry.revision) };
      }
    }
    try {
      await this.#kv.create(jobKey(job.jobId), toBinary(JobSchema, job));
    } catch (error) {
      // Give the key back at once (a reservation dated 0 is stale), so the client's retry need not wait for it
      // to expire; KV has no delete. A failed release still expires after RESERVATION_MS.
      if (reservation !== undefined) await this.#kv.update(reservation.key, encodeReservation(job.jobId, 0), reservation.revision).catch(() => undefined);
      throw error;
    }
    return { job, existing: false };
  }

  async get(jobId: string): Promise<{ job: Job; revision: number } | undefined> {
    assertJobId(jobId);
    const entry = await this.#kv.get(jobKey(jobId));
    if (entry === undefined) return undefined;
    return { job: fromBinary(JobSchema, entry.value), revision: entry.revision };
  }

  async require(jobId: string): Promise<{ job: Job; revision: number }> {
    const found = await this.get(jobId);
    if (found === undefined) throw new AppError(Code.NOT_FOUND, `no job ${jobId}`);
    return found;
  }

  /**
   * Changes a job with compare-and-set, retrying on concurrent writes. `change` returns false to leave the
   * record as it is (e.g. the state moved on meanwhile). With `owner`, the write happens only while the record
   * still names that attempt (checked within the same compare-and-set): a StaleOwnerError otherwise.
   */
  async update(jobId: string, change: (job: Job) => boolean | void, owner?: JobOwner): Promise<Job> {
    for (let attempt = 0; ; attempt++) {
      const { job, revision } = await this.outlast(`read job ${jobId}`, () => this.require(jobId));
      checkOwner(jobId, job, owner);
      if (change(job) === false) return job;
      job.updatedAt = timestampNow();
      try {
        // A write that landed without its answer fails its retry as stale: the loop re-reads and re-checks.
        await this.outlast(`write job ${jobId}`, () => this.#kv.update(jobKey(jobId), toBinary(JobSchema, job), revision));
        return job;
      } catch (error) {
        if (!AppError.is(error, Code.ABORTED) || attempt > 20) throw error;
      }
    }
  }

  /**
   * Throws StaleOwnerError unless `owner` still runs the job. For writes outside the record (checkpoint files,
   * events, the registry) that cannot share its compare-and-set: a stale owner is stopped before them, and the
   * record write that follows them is fenced.
   */
  async assertOwner(jobId: string, owner: JobOwner): Promise<void> {
    checkOwner(jobId, (await this.outlast(`read job ${jobId}`, () => this.require(jobId))).job, owner);
  }

  /** Every job, newest first. */
  async list(): Promise<Job[]> {
    const keys = await this.#kv.keys("job.");
    const jobs: Job[] = [];
    for (const key of keys) {
      const entry = await this.#kv.get(key);
      if (entry !== undefined) jobs.push(fromBinary(JobSchema, entry.value));
    }
    return jobs.sort((a, b) => (a.jobId < b.jobId ? 1 : a.jobId > b.jobId ? -1 : 0));
  }

  /** The highest event sequence stored for a job (0 when none). */
  async lastSequence(jobId: string): Promise<bigint> {
    const keys = await this.outlast(`list events of ${jobId}`, () => this.#kv.keys(eventPrefix(jobId)));
    const last = keys.at(-1);
    return last === undefined ? 0n : BigInt(last.slice(eventPrefix(jobId).length));
  }

  /** Stores an event and announces it to live watchers. */
  async appendEvent(event: JobEvent): Promise<void> {
    const bytes = toBinary(JobEventSchema, event);
    const key = eventKey(event.jobId, event.sequence);
    await this.outlast(`store event ${key}`, async (retry) => {
      try {
        await this.#kv.create(key, bytes);
      } catch (error) {
        // An earlier try stored it and lost the answer: the event is there once, not a sequence taken by another.
        if (retry && AppError.is(error, Code.ABORTED, Code.ALREADY_EXISTS) && Buffer.from((await this.#kv.get(key))?.value ?? []).equals(bytes)) return;
        throw error;
      }
    });
    // Watchers drop a live event they already have (by sequence), so a repeated announcement is harmless.
    await this.outlast(`announce event ${key}`, () => this.#events.publish(jobEventsSubject(event.jobId), bytes));
  }

  /** The stored events of a job with a sequence above `after`, in order. */
  async events(jobId: string, after = 0n): Promise<JobEvent[]> {
    const prefix = eventPrefix(jobId);
    const keys = (await this.#kv.keys(prefix)).filter((key) => BigInt(key.slice(prefix.length)) > after);
    const events: JobEvent[] = [];
    for (const key of keys) {
      const entry = await this.#kv.get(key);
      if (entry !== undefined) events.push(fromBinary(JobEventSchema, entry.value));
    }
    return events;
  }

  /**
   * The job's events after `after`, then live ones, each exactly once and in sequence order, until the job
   * ends (its final state change) or `signal` aborts. Gaps in the live feed are filled from the store.
   */
  async *watch(jobId: string, after: bigint, signal: AbortSignal): AsyncGenerator<JobEvent> {
    const live = new AsyncQueue<JobEvent>({ limit: 10_000 });
    const controller = new AbortController();
    const stop = AbortSignal.any([signal, controller.signal]);
    const subscription = (async () => {
      for await (const message of this.#events.subscribe(jobEventsSubject(jobId), stop)) live.push(fromBinary(JobEventSchema, message.data));
    })().catch((error: unknown) => live.fail(error));
    try {
      let last = after;
      const emit = (event: JobEvent): boolean => {
        last = event.sequence;
        return event.event.case === "stateChanged" && isTerminal(event.event.value.to);
      };
      // The replay passes over earlier ends (a job cancelled, then resumed); only the current one ends the watch.
      for (const event of await this.events(jobId, last)) {
        yield event;
        emit(event);
      }
      // A job that ended before any event was stored (or whose end is older than `after`) has nothing live.
      const { job } = await this.require(jobId);
      if (isTerminal(job.state) && (await this.lastSequence(jobId)) <= last) return;
      for await (const event of live.iterate(stop)) {
        if (event.sequence <= last) continue;
        if (event.sequence > last + 1n) {
          for (const missed of await this.events(jobId, last)) {
            if (missed.sequence >= event.sequence) break;
            yield missed;
            if (emit(missed)) return;
          }
        }
        yield event;
        if (emit(event)) return;
      }
    } finally {
      controller.abort();
      await subscription;
    }
  }

  /** The job record now, then on every change, until `signal` aborts. */
  async *watchRecord(jobId: string, signal: AbortSignal): AsyncGenerator<Job> {
    for await (const entry of this.#kv.watch(jobKey(jobId), signal)) yield fromBinary(JobSchema, entry.value);
  }
}

/** Appends a job's events with consecutive sequence numbers (one writer per job: the trainer running it). */
export class JobEventLog {
  readonly #store: JobStore;
  readonly #jobId: string;
  #sequence: bigint;
  #owner: JobOwner | undefined;

  private constructor(store: JobStore, jobId: string, sequence: bigint) {
    this.#store = store;
    this.#jobId = jobId;
    this.#sequence = sequence;
  }

  static async open(store: JobStore, jobId: string): Promise<JobEventLog> {
    return new JobEventLog(store, jobId, await store.lastSequence(jobId));
  }

  /** From now on every append first checks that `owner` still runs the job (StaleOwnerError otherwise). */
  fence(owner: JobOwner): void {
    this.#owner = owner;
  }

  /** Appends with the next sequence; when another writer took it (a cancel racing the runner), moves past it. */
  async append(event: MessageInitShape<typeof JobEventSchema>["event"]): Promise<JobEvent> {
    for (let attempt = 0; ; attempt++) {
      if (this.#owner !== undefined) await this.#store.assertOwner(this.#jobId, this.#owner);
      this.#sequence += 1n;
      const message = create(JobEventSchema, { jobId: this.#jobId, sequence: this.#sequence, time: timestampNow(), ...(event === undefined ? {} : { event }) });
      try {
        await this.#store.appendEvent(message);
        // Every state change of a job is written here, once, by whoever made it.
        if (message.event.case === "stateChanged") recordJobTransition(message.event.value.to);
        return message;
      } catch (error) {
        if (!AppError.is(error, Code.ABORTED, Code.ALREADY_EXISTS) || attempt > 20) throw error;
        this.#sequence = await this.#store.lastSequence(this.#jobId);
      }
    }
  }
}

/**
 * How long an idempotency key's reservation holds before a retry may take it over, when its job record never
 * appeared: longer than one StartTraining takes, shorter than a client's patience.
 */
const RESERVATION_MS = 30_000;

function encodeReservation(jobId: string, at: number): Uint8Array {
  return new TextEncoder().encode(JSON.stringify({ jobId, at }));
}

/** A reservation: `{ jobId, at }`; reservations written before they carried a time hold the bare job id. */
function decodeReservation(value: Uint8Array): { jobId: string; at: number } | undefined {
  const text = new TextDecoder().decode(value);
  if (!text.startsWith("{")) return { jobId: text, at: Date.now() };
  try {
    const parsed = JSON.parse(text) as { jobId?: unknown; at?: unknown };
    return typeof parsed.jobId === "string" && typeof parsed.at === "number" ? { jobId: parsed.jobId, at: parsed.at } : undefined;
  } catch {
    return undefined;
  }
}
