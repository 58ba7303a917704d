import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { context as otelContext } from "@opentelemetry/api";
import { AppError, AsyncQueue, Code, deferred, type Logger } from "@poseloop/core";
import { KeypointSmoother, PoseTracker } from "@poseloop/pose";
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
import type { InferenceLimits } from "./config.js";
import { personsInit } from "./frame-conversion.js";
import type { FrameProcessor, ProcessedFrame } from "./frame-processor.js";
import type { ModelManager } from "./model-manager.js";

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
  readonly tracking: { enabled: boolean; metric: TrackingMetric; matchThreshold: number; maxAgeFrames: number };
  readonly streamName: string;
}

export function resolveStreamOptions(options: StreamOptions, defaults: { modelName: string; limits: InferenceLimits }): ResolvedStreamOptions {
  const problems: string[] = [];
  if (options.minKeypointScore < 0 || options.minKeypointScore > 1 || Number.isNaN(options.minKeypointScore)) problems.push(`min_keypoint_score must be in [0, 1], got ${options.minKeypointScore}`);
  const smoothing = options.smoothing;
  if (smoothing?.enabled === true && (smoothing.minCutoff < 0 || smoothing.beta < 0 || smoothing.derivativeCutoff < 0)) problems.push("smoothing parameters must not be negative");
  const tracking = options.tracking;
  if (tracking?.enabled === true && (tracking.matchThreshold < 0 || tracking.matchThreshold > 1)) problems.push(`tracking match_threshold must be in [0, 1], got ${tracking.matchThreshold}`);
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
    },
    streamName: options.streamName,
  };
}

/** Tracking and smoothing of one stream, applied to results in the order they are sent. */
class StreamPostprocessor {
  readonly #tracker: PoseTracker | undefined;
  readonly #options: ResolvedStreamOptions;
  #smoother: KeypointSmoother | undefined;

  constructor(options: ResolvedStreamOptions) {
    this.#options = options;
    // Smoothing follows people across frames, so it needs track ids even when the client does not ask for them.
    const needsTracks = options.tracking.enabled || options.smoothing.enabled;
    this.#tracker = needsTracks ? new PoseTracker({ metric: options.tracking.metric === TrackingMetric.OKS ? "oks" : "iou", matchThreshold: options.tracking.matchThreshold, maxAgeFrames: options.tracking.maxAgeFrames }) : undefined;
  }

  apply(processed: ProcessedFrame): ResponseInit {
    const { estimates } = processed;
    if (!processed.ok) return { payload: { case: "result", value: processed.result } };
    let persons = estimates;
    let ids: number[] | undefined;
    if (this.#tracker !== undefined) {
      ids = this.#tracker.update(persons.map((p) => ({ box: p.bbox, keypoints: xy(p.keypoints), scores: scores(p.keypoints) })));
      if (this.#options.smoothing.enabled) {
        const k = persons[0] === undefined ? 0 : persons[0].keypoints.length / 3;
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

export interface StreamDependencies {
  readonly processor: FrameProcessor;
  readonly models: ModelManager;
  readonly limits: InferenceLimits;
  readonly defaultModel: string;
  readonly logger: Logger;
  readonly streamId: string;
}

/**
 * One StreamKeypoints call. EVERY_FRAME: frames are read only while fewer than max_in_flight are unanswered
 * (gRPC flow control then slows the sender) and answered strictly in order. LATEST_FRAME_WINS: frames are read
 * as fast as they come; while the model is busy a newer frame replaces the waiting ones, which are reported in
 * FramesDropped, so latency stays bounded whatever the input rate.
 */
export async function* runStream(requests: AsyncIterable<StreamKeypointsRequest>, signal: AbortSignal, deps: StreamDependencies): AsyncGenerator<ResponseInit> {
  const iterator = requests[Symbol.asyncIterator]();
  const first = await iterator.next();
  if (first.done === true || first.value.payload.case !== "options") {
    throw new AppError(Code.INVALID_ARGUMENT, "the first message of a stream must carry StreamOptions");
  }
  const options = resolveStreamOptions(first.value.payload.value, { modelName: deps.defaultModel, limits: deps.limits });
  if (options.modelName !== deps.defaultModel) throw new AppError(Code.NOT_FOUND, `this inferencer serves ${deps.defaultModel}, not ${options.modelName}`);
  const current = deps.models.current;
  yield {
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
        },
      },
    },
  };
  const settings = { flipTest: options.flipTest, minKeypointScore: options.minKeypointScore, maxPersons: options.maxPersons };
  const post = new StreamPostprocessor(options);
  const parent = otelContext.active();
  const attributes = { "poseloop.stream.id": deps.streamId, ...(options.streamName === "" ? {} : { "poseloop.stream.name": options.streamName }) };
  const out = new AsyncQueue<ResponseInit>();
  const process = (frame: Frame): Promise<ProcessedFrame> => deps.processor.process(frame, settings, parent, attributes);
  const emit = (processed: ProcessedFrame): void => {
    out.push(post.apply(processed));
    processed.span?.end();
  };

  const reader = options.delivery === DeliveryMode.EVERY_FRAME
    ? readEveryFrame(iterator, process, emit, options.maxInFlight, signal)
    : readLatestFrame(iterator, process, emit, (ids) => out.push({ payload: { case: "dropped", value: { frameIds: ids, reason: DropReason.SUPERSEDED } } }), options.maxInFlight, signal);
  reader.then(() => out.close(), (error: unknown) => out.fail(error));
  yield* out.iterate(signal);
}

/** In-order delivery with at most `maxInFlight` frames unanswered. */
async function readEveryFrame(
  iterator: AsyncIterator<StreamKeypointsRequest>,
  process: (frame: Frame) => Promise<ProcessedFrame>,
  emit: (processed: ProcessedFrame) => void,
  maxInFlight: number,
  signal: AbortSignal,
): Promise<void> {
  const inFlight: Promise<ProcessedFrame>[] = [];
  let emitting = Promise.resolve();
  let slot = deferred<void>();
  for (;;) {
    while (inFlight.length >= maxInFlight) {
      await slot.promise;
      if (signal.aborted) return;
    }
    const next = await iterator.next();
    if (next.done === true || signal.aborted) break;
    const frame = frameOf(next.value);
    const pending = process(frame);
    inFlight.push(pending);
    // Results leave in arrival order: each waits for the one before it.
    emitting = emitting.then(async () => {
      const processed = await pending;
      void inFlight.shift();
      emit(processed);
      const freed = slot;
      slot = deferred<void>();
      freed.resolve();
    });
  }
  await emitting;
}

/** Latest-frame-wins delivery: at most `depth` frames waiting; older waiting frames are dropped and reported. */
async function readLatestFrame(
  iterator: AsyncIterator<StreamKeypointsRequest>,
  process: (frame: Frame) => Promise<ProcessedFrame>,
  emit: (processed: ProcessedFrame) => void,
  dropped: (ids: bigint[]) => void,
  depth: number,
  signal: AbortSignal,
): Promise<void> {
  let waiting: Frame[] = [];
  let busy: Promise<void> | undefined;
  const pump = (): void => {
    if (busy !== undefined) return;
    const frame = waiting.shift();
    if (frame === undefined) return;
    busy = process(frame).then((processed) => {
      emit(processed);
      busy = undefined;
      pump();
    });
  };
  for (;;) {
    const next = await iterator.next();
    if (next.done === true || signal.aborted) break;
    waiting.push(frameOf(next.value));
    if (waiting.length > Math.max(1, depth)) {
      const stale = waiting.slice(0, waiting.length - Math.max(1, depth));
      waiting = waiting.slice(stale.length);
      dropped(stale.map((frame) => frame.frameId));
    }
    pump();
  }
  while (busy !== undefined || waiting.length > 0) {
    pump();
    await busy;
  }
}

function frameOf(request: StreamKeypointsRequest): Frame {
  if (request.payload.case !== "frame") throw new AppError(Code.INVALID_ARGUMENT, "after StreamOptions, every message of a stream must carry a Frame");
  return request.payload.value;
}
