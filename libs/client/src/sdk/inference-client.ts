import type { MessageInitShape } from "@bufbuild/protobuf";
import { AppError, Code } from "@poseloop/core";
import { createClient, type ClientControls, type MethodsOf, type ServiceClient } from "@poseloop/grpc";
import {
  DeliveryMode,
  InferenceService,
  PersonSource,
  TrackingMetric,
  type FrameResult,
  type GetServingModelResponse,
  type StreamKeypointsRequestSchema,
  type StreamKeypointsResponse,
  type StreamOptionsSchema,
  type WatchServingModelResponse,
} from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import {
  DEFAULT_INFERENCER_ADDRESS,
  inService,
  resolveConnection,
  toCallOptions,
  type ConnectionOptions,
  type RequestOptions,
  type ResolvedConnection,
} from "./client-options.js";
import { FlowWindow } from "./flow-window.js";
import { toFrameMessage, type FrameInput } from "./frame-input.js";

/** How a stream's frames are answered. */
export const Delivery = {
  /** Every frame, in order; a slow model slows the sender. */
  EVERY_FRAME: "every-frame",
  /** Live video: newer frames replace waiting ones, which are reported dropped. */
  LATEST_FRAME_WINS: "latest-frame-wins",
} as const;
export type Delivery = (typeof Delivery)[keyof typeof Delivery];

/** Where a stream's person boxes come from (the proto's PersonSource). */
export const PERSON_SOURCES = {
  auto: PersonSource.UNSPECIFIED,
  "client-boxes": PersonSource.CLIENT_BOXES,
  detector: PersonSource.DETECTOR,
  "whole-frame": PersonSource.WHOLE_FRAME,
} as const;
export type PersonSourceName = keyof typeof PERSON_SOURCES;

export interface KeypointStreamOptions extends RequestOptions {
  /** Default: the inferencer's default model. */
  modelName?: string;
  /** Default every-frame. */
  delivery?: Delivery;
  /** Frames the server holds unanswered (its queue depth); 0 or unset: the server's default. */
  maxInFlight?: number;
  /**
   * Frames this client sends ahead of their answers, at most; the frame source is not read further until
   * answers come back. Default max(16, 2 × maxInFlight), so the server's own queue stays full.
   */
  window?: number;
  minKeypointScore?: number;
  maxPersons?: number;
  /** One-Euro smoothing of keypoints over time. */
  smoothing?: boolean | { minCutoff?: number; beta?: number; derivativeCutoff?: number };
  /** Stable track ids across frames. */
  tracking?: boolean | { metric?: "iou" | "oks"; matchThreshold?: number; maxAgeFrames?: number };
  /**
   * Tracks (and smoothing state) restart at a frame whose colour histogram differs from the previous one's by
   * more than this, in [0, 1]; 1: never. Default: the server's (0.5).
   */
  sceneCutThreshold?: number;
  /** Where a frame's people come from; default "auto" (the frame's boxes, else the detector, else the whole frame). */
  personSource?: PersonSourceName;
  /** The person detector and its thresholds; unset fields take the detector manifest's defaults. */
  detector?: { modelName?: string; scoreThreshold?: number; iouThreshold?: number };
  flipTest?: boolean;
  /** A name for the stream in the server's logs and traces. */
  streamName?: string;
  /** Called as each frame is handed to gRPC, e.g. to measure latency. */
  onFrameSent?: (frameId: bigint) => void;
}

export interface DetectOptions extends RequestOptions {
  modelName?: string;
  minKeypointScore?: number;
  maxPersons?: number;
  flipTest?: boolean;
}

/**
 * InferenceService with friendly arguments: keypoint streams with bounded read-ahead, single images and the
 * serving model. Every call carries the bearer token; unary calls have a deadline.
 */
export class InferenceClient {
  readonly address: string;
  readonly #connection: ResolvedConnection;
  readonly #client: ServiceClient<MethodsOf<typeof InferenceService>> & ClientControls;

  constructor(options: ConnectionOptions = {}) {
    this.#connection = resolveConnection(options, DEFAULT_INFERENCER_ADDRESS);
    this.address = this.#connection.address;
    this.#client = createClient(InferenceService, this.address, this.#connection.client);
  }

  /**
   * Streams `frames` to the inferencer and yields its responses: first StreamAccepted, then a FrameResult per
   * frame (or FramesDropped notices under latest-frame-wins). Frames are pulled from `frames` only while
   * fewer than `window` are unanswered, and gRPC flow control holds them back further when the network or
   * the server is slow. Breaking out of the loop cancels the stream; an error thrown by `frames` ends it
   * with that error.
   */
  async *streamKeypoints(options: KeypointStreamOptions, frames: AsyncIterable<FrameInput>): AsyncGenerator<StreamKeypointsResponse, void, undefined> {
    const maxInFlight = options.maxInFlight ?? 0;
    const window = new FlowWindow(options.window ?? Math.max(16, 2 * maxInFlight));
    const source: { error?: unknown; failed: boolean } = { failed: false };
    const requests = streamRequests(toStreamOptions(options), frames, window, source, options);
    try {
      for await (const response of this.#client.streamKeypoints(requests, toCallOptions(this.#connection, options))) {
        if (response.payload.case === "result") window.release(1);
        else if (response.payload.case === "dropped") window.release(response.payload.value.frameIds.length);
        yield response;
      }
    } catch (error) {
      // The pump cancels the call when the frame source fails: report why, not the cancellation.
      throw source.failed ? AppError.from(source.error) : inService(error, "inferencer", this.address);
    } finally {
      window.close();
    }
    if (source.failed) throw AppError.from(source.error);
  }

  /** Keypoints for one image: raw pixels, or the bytes of a JPEG, PNG or WebP file. */
  async detect(image: FrameInput | Uint8Array, options: DetectOptions = {}): Promise<FrameResult> {
    const frame = toFrameMessage(image instanceof Uint8Array ? { encoded: image } : image, 1n);
    const response = await this.#unary(() =>
      this.#client.detectKeypoints(
        {
          modelName: options.modelName ?? "",
          frame,
          minKeypointScore: options.minKeypointScore ?? 0,
          maxPersons: options.maxPersons ?? 0,
          flipTest: options.flipTest ?? false,
        },
        toCallOptions(this.#connection, options),
      ),
    );
    if (response.result === undefined) throw new AppError(Code.INTERNAL, "DetectKeypoints answered without a result");
    return response.result;
  }

  /** The version serving now, when it was loaded, and the versions this inferencer served before. */
  async getServingModel(modelName = "", options: RequestOptions = {}): Promise<GetServingModelResponse> {
    return this.#unary(() => this.#client.getServingModel({ modelName }, toCallOptions(this.#connection, options)));
  }

  /** The serving state now, then every load, swap, failed load and drain, until cancelled. */
  async *watchServingModel(modelName = "", options: RequestOptions = {}): AsyncGenerator<WatchServingModelResponse, void, undefined> {
    try {
      yield* this.#client.watchServingModel({ modelName }, toCallOptions(this.#connection, options));
    } catch (error) {
      throw inService(error, "inferencer", this.address);
    }
  }

  /** Waits until the channel is connected, or fails with UNAVAILABLE after `timeoutMs`. */
  async ready(timeoutMs: number): Promise<void> {
    await this.#unary(() => this.#client.$waitForReady(timeoutMs));
  }

  /** Closes the channel; open calls are cancelled. */
  close(): void {
    this.#client.$close();
  }

  async #unary<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      throw inService(error, "inferencer", this.address);
    }
  }
}

type StreamRequest = MessageInitShape<typeof StreamKeypointsRequestSchema>;

async function* streamRequests(
  streamOptions: MessageInitShape<typeof StreamOptionsSchema>,
  frames: AsyncIterable<FrameInput>,
  window: FlowWindow,
  source: { error?: unknown; failed: boolean },
  options: KeypointStreamOptions,
): AsyncGenerator<StreamRequest, void, undefined> {
  yield { payload: { case: "options", value: streamOptions } };
  let nextId = 1n;
  const iterator = frames[Symbol.asyncIterator]();
  try {
    for (;;) {
      if (!(await window.acquire(options.signal))) return;
      let frame: ReturnType<typeof toFrameMessage>;
      try {
        const next = await iterator.next();
        if (next.done === true) return;
        frame = toFrameMessage(next.value, nextId);
      } catch (error) {
        source.error = error;
        source.failed = true;
        throw error;
      }
      const frameId = BigInt(frame.frameId ?? nextId);
      nextId = frameId + 1n;
      options.onFrameSent?.(frameId);
      yield { payload: { case: "frame", value: frame } };
    }
  } finally {
    await iterator.return?.();
  }
}

function toStreamOptions(options: KeypointStreamOptions): MessageInitShape<typeof StreamOptionsSchema> {
  const problems: string[] = [];
  const count = (name: string, value: number | undefined): number => {
    if (value === undefined) return 0;
    if (!Number.isInteger(value) || value < 0) problems.push(`${name} must be a non-negative integer, got ${value}`);
    return value;
  };
  const maxInFlight = count("maxInFlight", options.maxInFlight);
  const maxPersons = count("maxPersons", options.maxPersons);
  if (options.window !== undefined && !(Number.isInteger(options.window) && options.window >= 1)) {
    problems.push(`window must be a positive integer, got ${options.window}`);
  }
  const minKeypointScore = options.minKeypointScore ?? 0;
  if (!(minKeypointScore >= 0 && minKeypointScore <= 1)) problems.push(`minKeypointScore must be in [0, 1], got ${minKeypointScore}`);
  const sceneCutThreshold = options.sceneCutThreshold ?? 0;
  if (!(sceneCutThreshold >= 0 && sceneCutThreshold <= 1)) problems.push(`sceneCutThreshold must be in [0, 1], got ${sceneCutThreshold}`);
  const personSource = options.personSource ?? "auto";
  if (!Object.hasOwn(PERSON_SOURCES, personSource)) problems.push(`personSource must be one of ${Object.keys(PERSON_SOURCES).join(", ")}, got ${String(personSource)}`);
  if (problems.length > 0) throw AppError.invalid("stream options", problems);
  const smoothing = options.smoothing === undefined || options.smoothing === false ? undefined : options.smoothing === true ? {} : options.smoothing;
  const tracking = options.tracking === undefined || options.tracking === false ? undefined : options.tracking === true ? {} : options.tracking;
  return {
    modelName: options.modelName ?? "",
    delivery: options.delivery === "latest-frame-wins" ? DeliveryMode.LATEST_FRAME_WINS : DeliveryMode.EVERY_FRAME,
    maxInFlight,
    minKeypointScore,
    maxPersons,
    flipTest: options.flipTest ?? false,
    streamName: options.streamName ?? "",
    personSource: PERSON_SOURCES[personSource],
    ...(options.detector === undefined ? {} : { detector: { modelName: options.detector.modelName ?? "", scoreThreshold: options.detector.scoreThreshold ?? 0, iouThreshold: options.detector.iouThreshold ?? 0 } }),
    ...(smoothing === undefined ? {} : { smoothing: { enabled: true, ...smoothing } }),
    // The scene-cut threshold travels in the tracking options even when only smoothing keeps tracks.
    ...(tracking === undefined
      ? sceneCutThreshold === 0
        ? {}
        : { tracking: { enabled: false, sceneCutThreshold } }
      : {
          tracking: {
            enabled: true,
            metric: tracking.metric === "oks" ? TrackingMetric.OKS : tracking.metric === "iou" ? TrackingMetric.IOU : TrackingMetric.UNSPECIFIED,
            matchThreshold: tracking.matchThreshold ?? 0,
            maxAgeFrames: tracking.maxAgeFrames ?? 0,
            sceneCutThreshold,
          },
        }),
  };
}
