import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { context as otelContext, type Counter } from "@opentelemetry/api";
import { abortReason, AppError, Code, deferred, type Logger } from "@poseloop/core";
import { KeypointSmoother, PoseTracker } from "@poseloop/pose";
import { histogramDistance } from "@poseloop/vision";
import {
  DeliveryMode,
  DropReason,
  FrameResultSchema,
  TrackingMetric,
  type Frame,
  type StreamKeypointsRequest,
  type StreamKeypointsResponseSchema,
  type StreamOptions,
} from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { clientError } from "./client-error.js";
import type { InferenceLimits } from "./config.js";
import { personsInit } from "./frame-conversion.js";
import type { FrameProcessor, ProcessedFrame } from "./frame-processor.js";
import { framesCounter } from "./metrics.js";
import type { ModelManager } from "./model-manager.js";
import { personSourceProblems, resolvePersonSource, type DetectorAvailability, type PersonSourceSettings } from "./person-source.js";

type ResponseInit = MessageInitShape<typeof StreamKeypointsResponseSchema>;

/** Stream options with every default applied and every cap enforced. */
export interface ResolvedStreamOptions {
  readonly modelName: string;
  readonly delivery: DeliveryMode;
  readonly maxInFlight: number;
  readonly minKeypointScore: number;
  readonly maxPersons: number;
  readonly flipTest: boolean;
  readonly smoothing: { enabled: boolean; minCutoff: number; beta: number; derivativeCutoff: number };
  readonly tracking: { enabled: boolean; metric: TrackingMetric; matchThreshold: number; maxAgeFrames: number; sceneCutThreshold: number };
  readonly streamName: string;
  /** Where the stream's people come from (person_source, detector): set once the inferencer's detector is known. */
  readonly people?: PersonSourceSettings;
}

/** Ranges of the stream options. One-Euro frequencies above a video frame rate mean nothing. */
export const STREAM_OPTION_LIMITS = {
  maxCutoffHz: 1000,
  maxBeta: 1000,
  /** Tracks kept without a match: each costs memory and matching time on every frame of the stream. */
  maxAgeFrames: 1000,
  streamNameLength: 128,
} as const;

/**
 * Consecutive frames whose colour histograms differ by more than this are a scene cut. Measured on synthetic
 * clips: people walking over one background move the histogram by about 0.01, a cut to another background by
 * about 0.8; real shots differ less than random backgrounds, so the default sits well below a cut.
 */
export const DEFAULT_SCENE_CUT_THRESHOLD = 0.5;

/** Whether a stream keeps tracks (and so tests frames for scene cuts). */
export function keepsTracks(options: ResolvedStreamOptions): boolean {
  return options.tracking.enabled || options.smoothing.enabled;
}

/** Whether a stream's frames need their colour histograms: it keeps tracks and has not turned the cut test off. */
export function detectsSceneCuts(options: ResolvedStreamOptions): boolean {
  return keepsTracks(options) && options.tracking.sceneCutThreshold < 1;
}

/** The options of a stream; INVALID_ARGUMENT listing every problem (a value 0 means the default). */
export function resolveStreamOptions(options: StreamOptions, defaults: { modelName: string; limits: InferenceLimits }): ResolvedStreamOptions {
  const problems: string[] = [];
  const inRange = (value: number, name: string, min: number, max: number, minOpen = false): void => {
    if (!Number.isFinite(value) || (minOpen ? value <= min : value < min) || value > max) problems.push(`${name} must be a finite number in ${minOpen ? "(" : "["}${min}, ${max}], got ${value}`);
  };
  if (!Object.values(DeliveryMode).includes(options.delivery)) problems.push(`delivery ${options.delivery} is not a DeliveryMode`);
  inRange(options.minKeypointScore, "min_keypoint_score", 0, 1);
  const smoothing = options.smoothing;
  if (smoothing?.enabled === true) {
    // 0 stands for the default (proto3 cannot tell it from unset), so only non-zero values are checked.
    if (smoothing.minCutoff !== 0) inRange(smoothing.minCutoff, "smoothing.min_cutoff", 0, STREAM_OPTION_LIMITS.maxCutoffHz, true);
    if (smoothing.beta !== 0) inRange(smoothing.beta, "smoothing.beta", 0, STREAM_OPTION_LIMITS.maxBeta);
    if (smoothing.derivativeCutoff !== 0) inRange(smoothing.derivativeCutoff, "smoothing.derivative_cutoff", 0, STREAM_OPTION_LIMITS.maxCutoffHz, true);
  }
  const tracking = options.tracking;
  if (tracking?.enabled === true) {
    if (!Object.values(TrackingMetric).includes(tracking.metric)) problems.push(`tracking.metric ${tracking.metric} is not a TrackingMetric`);
    inRange(tracking.matchThreshold, "tracking.match_threshold", 0, 1);
    if (tracking.maxAgeFrames > STREAM_OPTION_LIMITS.maxAgeFrames) problems.push(`tracking.max_age_frames must be at most ${STREAM_OPTION_LIMITS.maxAgeFrames}, got ${tracking.maxAgeFrames}`);
  }
  // Smoothing alone keeps tracks too, so the scene-cut threshold is checked whenever either is on.
  if (tracking !== undefined && (tracking.enabled || smoothing?.enabled === true)) inRange(tracking.sceneCutThreshold, "tracking.scene_cut_threshold", 0, 1);
  problems.push(...personSourceProblems(options.personSource, options.detector));
  if (options.streamName.length > STREAM_OPTION_LIMITS.streamNameLength) problems.push(`stream_name must be at most ${STREAM_OPTION_LIMITS.streamNameLength} characters, got ${options.streamName.length}`);
  if (problems.length > 0) throw AppError.invalid("stream options", problems);
  return {
    modelName: options.modelName === "" ? defaults.modelName : options.modelName,
    delivery: options.delivery === DeliveryMode.LATEST_FRAME_WINS ? DeliveryMode.LATEST_FRAME_WINS : DeliveryMode.EVERY_FRAME,
    maxInFlight: Math.min(options.maxInFlight === 0 ? defaults.limits.defaultMaxInFlight : options.maxInFlight, defaults.limits.maxInFlight),
    minKeypointScore: options.minKeypointScore === 0 ? 0.2 : options.minKeypointScore,
    maxPersons: options.maxPersons,
    flipTest: options.flipTest,
    smoothing: {
      enabled: smoothing?.enabled === true,
      minCutoff: smoothing?.minCutoff || 1,
      beta: smoothing?.beta || 0.007,
      derivativeCutoff: smoothing?.derivativeCutoff || 1,
    },
    tracking: {
      enabled: tracking?.enabled === true,
      metric: tracking?.metric === TrackingMetric.OKS ? TrackingMetric.OKS : TrackingMetric.IOU,
      matchThreshold: tracking?.matchThreshold || 0.3,
      maxAgeFrames: tracking?.maxAgeFrames || 30,
      sceneCutThreshold: tracking?.sceneCutThreshold || DEFAULT_SCENE_CUT_THRESHOLD,
    },
    streamName: options.streamName,
  };
}

/**
 * Tracking and smoothing of one stream, applied to results in the order they are sent. A scene cut (an edit,
 * a camera switch) ends every track: the people after it are other people, or the same ones somewhere else,
 * and boxes that happen to overlap across the cut would otherwise hand old ids and old smoothing state to
 * them. The test compares coarse colour histograms of consecutive decoded frames: cheap (a few thousand
 * pixels sampled in the worker that decoded the frame), independent of the person source (client boxes may
 * not move at all across a cut), and blind to people moving over a still background.
 */
class StreamPostprocessor {
  readonly #options: ResolvedStreamOptions;
  readonly #logger: Logger;
  /** Smoothing follows people across frames, so it needs track ids even when the client does not ask for them. */
  readonly #keepsTracks: boolean;
  #tracker: PoseTracker | undefined;
  /** The people the tracker and the smoother are for: their keypoint count, and the sigmas when matched by OKS. */
  #schema: string | undefined;
  #smoother: KeypointSmoother | undefined;
  #lastHistogram: Float32Array | undefined;
  #warnedNoSigmas = false;

  constructor(options: ResolvedStreamOptions, logger: Logger) {
    this.#options = options;
    this.#logger = logger;
    this.#keepsTracks = keepsTracks(options);
  }

  apply(processed: ProcessedFrame): ResponseInit {
    const { estimates } = processed;
    if (!processed.ok) return { payload: { case: "result", value: processed.result } };
    let persons = estimates;
    let ids: number[] | undefined;
    if (this.#keepsTracks) {
      if (this.#sceneCut(processed.histogram)) {
        this.#tracker?.reset();
        this.#smoother?.retain([]);
      }
      const { tracker, oks } = this.#trackerFor(processed);
      // Box IoU needs no keypoints: left out, they are not held to any keypoint count.
      ids = tracker.update(persons.map((p) => (oks ? { box: p.bbox, keypoints: xy(p.keypoints), scores: scores(p.keypoints) } : { box: p.bbox })));
      // A frame without people has nothing to smooth (and no keypoint count to size the filters by).
      if (this.#options.smoothing.enabled && persons[0] !== undefined) {
        const k = persons[0].keypoints.length / 3;
        const smoother = this.#smootherFor(k);
        persons = persons.map((p, i) => {
          const smoothed = smoother.smooth(ids?.[i] as number, xy(p.keypoints), processed.frame.ptsUs);
          const keypoints = Float32Array.from(p.keypoints);
          for (let j = 0; j < k; j++) {
            keypoints[3 * j] = smoothed[2 * j] as number;
            keypoints[3 * j + 1] = smoothed[2 * j + 1] as number;
          }
          return { ...p, keypoints };
        });
        smoother.retain(ids);
      }
    }
    const result = create(FrameResultSchema, processed.result);
    result.persons = personsInit(persons, this.#options.tracking.enabled ? ids : undefined);
    return { payload: { case: "result", value: result } };
  }

  /**
   * The tracker for this frame's people. OKS weighs each keypoint by its schema's sigma, so a stream asking for it
   * is matched with the sigmas of the model that ran the frame (processed.oksSigmas); a model that names none
   * (nor a schema PoseLoop knows) is matched by box IoU instead, said once in the log, rather than by sigmas of
   * another schema. When the frame's people are of another schema than the tracks (the model swapped mid-stream
   * to one with another keypoint count or other sigmas, or a canary's candidate answers), the tracker is
   * replaced: its tracks hold the old schema's keypoints, which OKS cannot compare with the new ones (another
   * count throws; the same count of other keypoints matches the wrong people), and the smoother's filters are
   * sized and tuned for the old keypoints. Ids keep counting up, so no id names two people; the people after
   * the swap get new ids, as after a scene cut. A frame without people leaves the tracker as it is (its tracks age).
   */
  #trackerFor(processed: ProcessedFrame): { tracker: PoseTracker; oks: boolean } {
    const first = processed.estimates[0];
    const tracking = this.#options.tracking;
    const wantsOks = tracking.metric === TrackingMetric.OKS;
    if (first === undefined) {
      this.#tracker ??= new PoseTracker({ metric: "iou", matchThreshold: tracking.matchThreshold, maxAgeFrames: tracking.maxAgeFrames });
      return { tracker: this.#tracker, oks: this.#tracker.metric === "oks" };
    }
    const k = first.keypoints.length / 3;
    const sigmas = wantsOks ? processed.oksSigmas : undefined;
    if (wantsOks && sigmas === undefined && !this.#warnedNoSigmas) {
      this.#warnedNoSigmas = true;
      this.#logger.warn("OKS tracking asked for, but the model names no OKS sigmas for its keypoints: tracking by box IoU", { model: processed.result.model?.version, keypoints: k });
    }
    // To float32's precision: a manifest's sigmas are float32, COCO's constants (a manifest naming none) float64.
    const schema = sigmas === undefined ? `${k}` : `${k}:${sigmas.map((sigma) => sigma.toPrecision(6)).join(",")}`;
    if (this.#tracker === undefined || schema !== this.#schema) {
      this.#tracker = new PoseTracker({
        metric: sigmas === undefined ? "iou" : "oks",
        matchThreshold: tracking.matchThreshold,
        maxAgeFrames: tracking.maxAgeFrames,
        ...(sigmas === undefined ? {} : { sigmas }),
        firstId: this.#tracker?.nextId ?? 1,
      });
      this.#schema = schema;
      this.#smoother = undefined;
    }
    return { tracker: this.#tracker, oks: sigmas !== undefined };
  }

  /** Whether this frame starts another shot; remembers its histogram for the next frame. */
  #sceneCut(histogram: Float32Array | undefined): boolean {
    if (histogram === undefined) return false;
    const last = this.#lastHistogram;
    this.#lastHistogram = histogram;
    return last !== undefined && histogramDistance(last, histogram) > this.#options.tracking.sceneCutThreshold;
  }

  #smootherFor(k: number): KeypointSmoother {
    this.#smoother ??= new KeypointSmoother(k, { minCutoff: this.#options.smoothing.minCutoff, beta: this.#options.smoothing.beta, derivativeCutoff: this.#options.smoothing.derivativeCutoff });
    return this.#smoother;
  }
}

function xy(keypoints: Float32Array): Float32Array {
  const out = new Float32Array((keypoints.length / 3) * 2);
  for (let i = 0; i < keypoints.length / 3; i++) {
    out[2 * i] = keypoints[3 * i] as number;
    out[2 * i + 1] = keypoints[3 * i + 1] as number;
  }
  return out;
}

function scores(keypoints: Float32Array): Float32Array {
  return Float32Array.from({ length: keypoints.length / 3 }, (_, i) => keypoints[3 * i + 2] as number);
}

/**
 * A processor that answers some streams with another model version (a canary trial's share): the processor
 * for the stream keyed `streamKey` at this moment. Asked per frame, since a trial starts and ends mid-stream.
 */
export interface StreamRouter {
  forStream(streamKey: string): Pick<FrameProcessor, "process">;
}

export interface StreamDependencies {
  readonly processor: Pick<FrameProcessor, "process"> & Partial<StreamRouter>;
  readonly models: Pick<ModelManager, "current">;
  readonly limits: InferenceLimits;
  readonly defaultModel: string;
  readonly logger: Logger;
  readonly streamId: string;
  /** The person detector, when the inferencer runs one. */
  readonly detector?: DetectorAvailability;
}

/** Frame ids one FramesDropped notice may collect while the client does not read; then reading pauses. */
export const MAX_PENDING_DROPPED_IDS = 4096;

/**
 * One StreamKeypoints call. EVERY_FRAME: frames are read only while fewer than max_in_flight are unanswered,
 * a frame counting until its result has left for gRPC (so a client that does not read stops being read, and
 * gRPC flow control slows the sender), and answered strictly in order. LATEST_FRAME_WINS: frames are read as
 * fast as they come while results are collected; while the model is busy a newer frame replaces the waiting
 * ones, reported in FramesDropped notices that merge while the client does not read them, so latency and
 * memory stay bounded whatever the input rate.
 *
 * A client that sends no options within the first-message timeout, or nothing while the server waits to read,
 * within the idle timeout, gets DEADLINE_EXCEEDED. A frame message that is not a Frame ends the stream with
 * INVALID_ARGUMENT after the frames read before it are answered. Anything else that throws inside the pipeline
 * ends this stream only, with a status naming a log reference.
 */
export async function* runStream(requests: AsyncIterable<StreamKeypointsRequest>, signal: AbortSignal, deps: StreamDependencies): AsyncGenerator<ResponseInit, void, undefined> {
  const iterator = requests[Symbol.asyncIterator]();
  const first = await nextRequest(iterator, deps.limits.streamFirstMessageTimeoutMs, `no StreamOptions within ${deps.limits.streamFirstMessageTimeoutMs} ms`);
  if (first.done === true || first.value.payload.case !== "options") {
    throw new AppError(Code.INVALID_ARGUMENT, "the first message of a stream must carry StreamOptions");
  }
  const requested = first.value.payload.value;
  const resolved = resolveStreamOptions(requested, { modelName: deps.defaultModel, limits: deps.limits });
  if (resolved.modelName !== deps.defaultModel) throw new AppError(Code.NOT_FOUND, `this inferencer serves ${deps.defaultModel}, not ${resolved.modelName}`);
  const people = resolvePersonSource(requested.personSource, requested.detector, deps.detector);
  const options: ResolvedStreamOptions = { ...resolved, people };
  const current = deps.models.current;
  const accepted: ResponseInit = {
    payload: {
      case: "accepted",
      value: {
        streamId: deps.streamId,
        ...(current === undefined ? {} : { model: current.ref }),
        options: {
          modelName: options.modelName,
          delivery: options.delivery,
          maxInFlight: options.maxInFlight,
          minKeypointScore: options.minKeypointScore,
          maxPersons: options.maxPersons,
          flipTest: options.flipTest,
          smoothing: options.smoothing,
          tracking: options.tracking,
          streamName: options.streamName,
          personSource: people.personSource,
          ...(requested.detector === undefined ? {} : { detector: { ...requested.detector, modelName: deps.detector?.modelName ?? "" } }),
        },
      },
    },
  };
  yield* new StreamSession(iterator, signal, deps, options, accepted).responses();
}

/** The next request, or DEADLINE_EXCEEDED after `timeoutMs` (the read itself is left to the call's end). */
async function nextRequest(iterator: AsyncIterator<StreamKeypointsRequest>, timeoutMs: number, what: string): Promise<IteratorResult<StreamKeypointsRequest>> {
  const next = iterator.next();
  // Lost races must not surface as unhandled rejections; the call's end settles the read.
  next.catch(() => undefined);
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new AppError(Code.DEADLINE_EXCEEDED, `stream closed: ${what}`)), timeoutMs);
  });
  try {
    return await Promise.race([next, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

type Settled = { ok: true; processed: ProcessedFrame } | { ok: false; error: unknown };

/**
 * The frames of one stream after its options: a reader that pulls requests, a pipeline that runs them, and an
 * outbox of responses the consumer (gRPC's writer, which pulls only when the transport has room) drains.
 * Every loop ends in `#fail` or in the session's end state instead of a rejection nobody handles, so no error
 * escapes the stream.
 */
class StreamSession {
  readonly #iterator: AsyncIterator<StreamKeypointsRequest>;
  readonly #signal: AbortSignal;
  readonly #deps: StreamDependencies;
  readonly #options: ResolvedStreamOptions;
  readonly #post: StreamPostprocessor;
  readonly #process: (frame: Frame) => Promise<Settled>;
  /** Counts the frames this stream drops; the processor counts the ones it answers. */
  readonly #frames: Counter;
  readonly #outbox: ResponseInit[] = [];
  /** Results in the outbox (not notices): with the frames in the pipeline, what the client has not taken yet. */
  #queuedResults = 0;
  #pendingDropped: bigint[] | undefined;
  #changed = deferred<void>();
  /** Set once: an internal failure ends the stream at once; `#ending` waits for the frames already read. */
  #failure: AppError | undefined;
  #ending: { error?: AppError } | undefined;
  #readerDone = false;
  #pipelineDone = false;

  /** `accepted` leaves first; frames are read from the moment it is taken, whether or not gRPC sent it yet. */
  constructor(iterator: AsyncIterator<StreamKeypointsRequest>, signal: AbortSignal, deps: StreamDependencies, options: ResolvedStreamOptions, accepted: ResponseInit) {
    this.#outbox.push(accepted);
    this.#iterator = iterator;
    this.#signal = signal;
    this.#deps = deps;
    this.#options = options;
    this.#post = new StreamPostprocessor(options, deps.logger);
    this.#frames = framesCounter();
    const settings = { flipTest: options.flipTest, minKeypointScore: options.minKeypointScore, maxPersons: options.maxPersons, histogram: detectsSceneCuts(options), ...(options.people === undefined ? {} : { people: options.people }) };
    const parent = otelContext.active();
    const attributes = { "poseloop.stream.id": deps.streamId, ...(options.streamName === "" ? {} : { "poseloop.stream.name": options.streamName }) };
    // The client's stream name keys the stream where there is one, so a camera that reconnects stays on the same
    // side of a canary; otherwise the stream's own id.
    const streamKey = options.streamName === "" ? deps.streamId : options.streamName;
    this.#process = async (frame) => {
      try {
        const processor = deps.processor.forStream?.(streamKey) ?? deps.processor;
        return { ok: true, processed: await processor.process(frame, settings, { parent, attributes, logger: deps.logger, stream: deps.streamId }) };
      } catch (error) {
        return { ok: false, error };
      }
    };
  }

  async *responses(): AsyncGenerator<ResponseInit, void, undefined> {
    const every = this.#options.delivery === DeliveryMode.EVERY_FRAME;
    const pipeline = every ? this.#everyFrame() : this.#latestFrame();
    void pipeline.then(
      () => {
        this.#pipelineDone = true;
        this.#notify();
      },
      (error: unknown) => this.#fail(error, "stream pipeline failed"),
    );
    try {
      for (;;) {
        if (this.#failure !== undefined) throw this.#failure;
        const item = this.#outbox.shift();
        if (item !== undefined) {
          if (item.payload?.case === "result") this.#queuedResults--;
          else if (item.payload?.case === "dropped") this.#pendingDropped = undefined;
          this.#notify();
          yield item;
          continue;
        }
        if (this.#pipelineDone) {
          if (this.#ending?.error !== undefined) throw this.#ending.error;
          return;
        }
        await this.#wait();
      }
    } finally {
      // The loops stop at their next step; reads still pending end with the call.
      this.#failure ??= new AppError(Code.CANCELLED, "stream closed");
      this.#notify();
    }
  }

  /** In-order delivery with at most `maxInFlight` frames read and not yet handed to gRPC. */
  async #everyFrame(): Promise<void> {
    const inFlight: Promise<Settled>[] = [];
    const emitter = (async () => {
      for (;;) {
        const head = inFlight[0];
        if (head === undefined) {
          if (this.#readerDone) return;
          await this.#wait();
          continue;
        }
        const settled = await head;
        if (this.#failure !== undefined) return;
        this.#emit(settled);
        void inFlight.shift();
      }
    })();
    emitter.catch(() => undefined);
    await this.#read(
      () => inFlight.length + this.#queuedResults >= this.#options.maxInFlight,
      (frame) => {
        inFlight.push(this.#process(frame));
        this.#notify();
      },
    );
    await emitter;
  }

  /** Latest-frame-wins: at most `depth` frames waiting; older waiting frames are dropped and reported. */
  async #latestFrame(): Promise<void> {
    const depth = Math.max(1, this.#options.maxInFlight);
    const waiting: Frame[] = [];
    const runner = (async () => {
      for (;;) {
        const frame = waiting.shift();
        if (frame === undefined) {
          if (this.#readerDone) return;
          await this.#wait();
          continue;
        }
        const settled = await this.#process(frame);
        if (this.#failure !== undefined) return;
        this.#emit(settled);
      }
    })();
    runner.catch(() => undefined);
    await this.#read(
      // Results the client has not taken, or a notice grown large, pause reading: the client is not reading.
      () => this.#queuedResults >= depth || (this.#pendingDropped?.length ?? 0) >= MAX_PENDING_DROPPED_IDS,
      (frame) => {
        waiting.push(frame);
        if (waiting.length > depth) this.#dropped(waiting.splice(0, waiting.length - depth).map((f) => f.frameId));
        this.#notify();
      },
    );
    await runner;
  }

  /**
   * Reads frames while `full()` is false. The end of the requests, the idle timeout and a message that is not
   * a Frame end reading; frames already read are still answered, then the stream ends with that status.
   */
  async #read(full: () => boolean, accept: (frame: Frame) => void): Promise<void> {
    const idleMs = this.#deps.limits.streamIdleTimeoutMs;
    try {
      for (;;) {
        if (this.#failure !== undefined) return;
        if (full()) {
          await this.#wait();
          continue;
        }
        const next = await nextRequest(this.#iterator, idleMs, `no message for ${idleMs} ms`);
        if (next.done === true || this.#failure !== undefined) return;
        if (next.value.payload.case !== "frame") {
          this.#ending = { error: new AppError(Code.INVALID_ARGUMENT, "after StreamOptions, every message of a stream must carry a Frame") };
          return;
        }
        accept(next.value.payload.value);
      }
    } catch (error) {
      if (AppError.is(error, Code.DEADLINE_EXCEEDED)) this.#ending = { error };
      else throw error;
    } finally {
      this.#readerDone = true;
      this.#notify();
    }
  }

  #emit(settled: Settled): void {
    if (!settled.ok) {
      this.#fail(settled.error, "frame processing failed");
      return;
    }
    const { processed } = settled;
    try {
      this.#outbox.push(this.#post.apply(processed));
      this.#queuedResults++;
      processed.span?.end();
    } catch (error) {
      this.#fail(error, "stream postprocessing failed");
      return;
    }
    this.#notify();
  }

  #dropped(ids: bigint[]): void {
    this.#frames.add(ids.length, { "poseloop.model.name": this.#options.modelName, outcome: "dropped" });
    // Notices merge while the client has not taken them: one per frame would grow as fast as frames come in.
    if (this.#pendingDropped !== undefined) {
      this.#pendingDropped.push(...ids);
      return;
    }
    this.#pendingDropped = ids;
    this.#outbox.push({ payload: { case: "dropped", value: { frameIds: ids, reason: DropReason.SUPERSEDED } } });
  }

  #fail(error: unknown, what: string): void {
    if (this.#failure === undefined) this.#failure = clientError(error, this.#deps.logger, what);
    this.#notify();
  }

  #notify(): void {
    const changed = this.#changed;
    this.#changed = deferred<void>();
    changed.resolve();
  }

  /** Waits for any change of the session's state, or the end of the call. */
  #wait(): Promise<void> {
    if (this.#signal.aborted) return Promise.reject(abortReason(this.#signal));
    const changed = this.#changed.promise;
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => reject(abortReason(this.#signal));
      this.#signal.addEventListener("abort", onAbort, { once: true });
      void changed.then(() => {
        this.#signal.removeEventListener("abort", onAbort);
        resolve();
      });
    });
  }
}
