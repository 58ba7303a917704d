import { metrics, ValueType, type Attributes, type BatchObservableResult, type Counter, type Gauge, type Histogram, type MeterProvider } from "@opentelemetry/api";
import type { Logger } from "@poseloop/core";
import { JobState, type Job } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";

/**
 * The trainer's OpenTelemetry metrics (meter `@poseloop/trainer`): the curves of a run as it trains (loss, LR,
 * gradient norm, samples/s, validation AP, steps, epoch time) and the state of the jobs (transitions, jobs by
 * state, the queue). The service's SDK (libs/telemetry) owns the MeterProvider and its readers; until it
 * starts, every instrument here is a no-op. Names follow the list agreed for both services (README, Metrics).
 */
export const TRAINER_METER = "@poseloop/trainer";

/** Which run a curve belongs to. */
export interface RunAttributes {
  readonly jobId: string;
  /** PUBLISH.MODEL_NAME: the model the job trains. */
  readonly modelName: string;
}

interface Instruments {
  readonly loss: Gauge;
  readonly lr: Gauge;
  readonly gradNorm: Gauge;
  readonly samplesPerSecond: Gauge;
  readonly validationAp: Gauge;
  readonly steps: Counter;
  readonly epochDuration: Histogram;
  readonly transitions: Counter;
}

// Epochs take seconds in tests and the demo, hours on COCO: the SDK's default buckets stop at 10 000 ms-sized
// values meant for request latencies.
const EPOCH_SECONDS_BUCKETS = [1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14_400, 28_800];

/**
 * The instruments of the global MeterProvider as it is now. The metrics API hands out no proxy (unlike the
 * tracer API), so instruments taken before the SDK registered its provider would stay no-ops: they are made
 * again whenever the global provider changes.
 */
let current: { provider: MeterProvider; instruments: Instruments } | undefined;
function instruments(): Instruments {
  const provider = metrics.getMeterProvider();
  if (current?.provider === provider) return current.instruments;
  const meter = provider.getMeter(TRAINER_METER);
  const instruments: Instruments = {
    loss: meter.createGauge("poseloop.trainer.loss", { unit: "1", description: "Mean training loss of the last logged steps (TRAIN.LOG_EVERY_STEPS)", valueType: ValueType.DOUBLE }),
    lr: meter.createGauge("poseloop.trainer.lr", { unit: "1", description: "Learning rate of the last step", valueType: ValueType.DOUBLE }),
    gradNorm: meter.createGauge("poseloop.trainer.grad_norm", { unit: "1", description: "Global gradient norm of the last applied update (before clipping)", valueType: ValueType.DOUBLE }),
    samplesPerSecond: meter.createGauge("poseloop.trainer.samples_per_second", { unit: "{sample}/s", description: "Training samples per second over the last logged steps", valueType: ValueType.DOUBLE }),
    validationAp: meter.createGauge("poseloop.trainer.validation.ap", {
      unit: "1",
      description: "COCO keypoint AP on the validation set: each validated epoch (no precision attribute), and the fp32 and int8 models of a publication's gate (precision)",
      valueType: ValueType.DOUBLE,
    }),
    steps: meter.createCounter("poseloop.trainer.steps", { unit: "{step}", description: "Optimizer updates taken (skipped fp16 overflow updates included)", valueType: ValueType.INT }),
    epochDuration: meter.createHistogram("poseloop.trainer.epoch.duration", {
      unit: "s",
      description: "Training time of an epoch run whole by one attempt (validation and checkpoint not included)",
      advice: { explicitBucketBoundaries: EPOCH_SECONDS_BUCKETS },
    }),
    transitions: meter.createCounter("poseloop.trainer.job.transitions", { unit: "{transition}", description: "Job state changes, by the state entered", valueType: ValueType.INT }),
  };
  current = { provider, instruments };
  return instruments;
}

const runAttributes = (run: RunAttributes): Attributes => ({ "poseloop.job.id": run.jobId, "poseloop.model.name": run.modelName });

/** "queued", "running", ... as the metrics' `state` attribute. */
export const stateName = (state: JobState): string => (JobState[state] ?? "unspecified").toLowerCase();

/** What a chunk of training (the steps between two progress reports) did. */
export interface TrainingChunkFacts {
  readonly steps: number;
  readonly loss: number;
  readonly lr: number;
  /** NaN when no update was applied in the chunk. */
  readonly gradNorm: number;
  readonly samples: number;
  readonly seconds: number;
}

/** A chunk of training: the curves' next points. Values that are not finite are not a point of any curve. */
export function recordTrainingChunk(run: RunAttributes, chunk: TrainingChunkFacts): void {
  const m = instruments();
  const attributes = runAttributes(run);
  if (chunk.steps > 0) m.steps.add(chunk.steps, attributes);
  if (Number.isFinite(chunk.loss)) m.loss.record(chunk.loss, attributes);
  if (chunk.steps > 0 && Number.isFinite(chunk.lr)) m.lr.record(chunk.lr, attributes);
  if (Number.isFinite(chunk.gradNorm)) m.gradNorm.record(chunk.gradNorm, attributes);
  if (chunk.samples > 0 && chunk.seconds > 0) m.samplesPerSecond.record(chunk.samples / chunk.seconds, attributes);
}

/** A validation AP: an epoch's (no precision), or a publication gate's fp32 or int8 model. */
export function recordValidationAp(run: RunAttributes, ap: number, precision?: "fp32" | "int8"): void {
  if (!Number.isFinite(ap)) return;
  instruments().validationAp.record(ap, { ...runAttributes(run), ...(precision === undefined ? {} : { precision }) });
}

export function recordEpochDuration(run: RunAttributes, seconds: number): void {
  instruments().epochDuration.record(seconds, runAttributes(run));
}

/** A job entered `state` (counted by whoever wrote the change: the API for submissions and cancels, the runner else). */
export function recordJobTransition(state: JobState): void {
  instruments().transitions.add(1, { state: stateName(state) });
}

/** How often the job counts are read again at most; a scrape in between reports the last counts. */
const JOB_COUNTS_MAX_AGE_MS = 15_000;

/** Every state a job can be in, each reported (0 included) so that a dashboard's series exist from the start. */
const STATES = [JobState.QUEUED, JobState.RUNNING, JobState.CANCELLING, JobState.CANCELLED, JobState.SUCCEEDED, JobState.FAILED];

/**
 * `poseloop.trainer.jobs` (by `state`) and `poseloop.trainer.queue.length` (jobs QUEUED: submitted or resumed
 * and not yet taken by a trainer), counted from the job records every trainer shares. Reading them is bus I/O,
 * which an observable callback must not wait on: a collection reports the counts read last and, when they are
 * older than `maxAgeMs`, starts a new read in the background. No collection (no metrics reader), no read.
 * The counts are of the whole bus, so every trainer on it reports the same: aggregate them with max, not sum.
 */
export function observeJobCounts(list: () => Promise<readonly Job[]>, logger: Logger, options: { maxAgeMs?: number } = {}): { readonly refreshed: () => Promise<void>; close(): void } {
  const maxAgeMs = options.maxAgeMs ?? JOB_COUNTS_MAX_AGE_MS;
  const meter = metrics.getMeter(TRAINER_METER);
  const queueLength = meter.createObservableGauge("poseloop.trainer.queue.length", { unit: "{job}", description: "Jobs waiting for a trainer (state QUEUED), on the whole bus", valueType: ValueType.INT });
  const jobs = meter.createObservableGauge("poseloop.trainer.jobs", { unit: "{job}", description: "Jobs on the whole bus, by state", valueType: ValueType.INT });
  let counts: Map<JobState, number> | undefined;
  let readAt = Number.NEGATIVE_INFINITY;
  let reading: Promise<void> | undefined;
  const read = (): Promise<void> => {
    reading ??= list()
      .then((all) => {
        const next = new Map<JobState, number>(STATES.map((state) => [state, 0]));
        for (const job of all) next.set(job.state, (next.get(job.state) ?? 0) + 1);
        counts = next;
      })
      .catch((error: unknown) => logger.warn("reading the job records for the job metrics failed; the next collection tries again", { err: error }))
      .finally(() => {
        readAt = Date.now();
        reading = undefined;
      });
    return reading;
  };
  const observe = (result: BatchObservableResult): void => {
    if (reading === undefined && Date.now() - readAt >= maxAgeMs) void read();
    if (counts === undefined) return;
    result.observe(queueLength, counts.get(JobState.QUEUED) ?? 0);
    for (const state of STATES) result.observe(jobs, counts.get(state) ?? 0, { state: stateName(state) });
  };
  meter.addBatchObservableCallback(observe, [queueLength, jobs]);
  return {
    /** Settles when the read in progress (if any) has; for tests and for a first collection that wants counts. */
    refreshed: () => reading ?? Promise.resolve(),
    close: () => meter.removeBatchObservableCallback(observe, [queueLength, jobs]),
  };
}
