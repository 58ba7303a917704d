import type { MessageInitShape } from "@bufbuild/protobuf";
import { context as otelContext, SpanKind, SpanStatusCode, trace, type Context, type Counter, type Histogram, type Link, type Span } from "@opentelemetry/api";
import { AppError, Code, isCode, type Logger } from "@poseloop/core";
import { PersonSource, type Frame, type FrameResultSchema } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import type { ModelRef } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { traceIdOf } from "@poseloop/telemetry";
import type { BatchScheduler } from "./batch-scheduler.js";
import type { InferenceLimits } from "./config.js";
import { frameJob, type FrameSettings } from "./frame-conversion.js";
import type { FrameJob, PersonEstimate } from "@poseloop/estimator";
import type { DetectorServingSpec } from "./detector-spec.js";
import type { DetectedBox, DetectionJob, DetectionOutcome } from "./person-detector.js";
import { AUTO_PERSON_SOURCE } from "./person-source.js";
import { clientError } from "./client-error.js";
import { frameDurationHistogram, framesCounter, type FrameOutcomeLabel, type FrameStage } from "./metrics.js";
import type { ServingHandle } from "./serving-handle.js";

export type FrameResultInit = MessageInitShape<typeof FrameResultSchema>;

/** The person detector's stage: its own batch lane (frames of every stream batched together) over its versions. */
export interface DetectorStage {
  readonly scheduler: Pick<BatchScheduler<DetectionJob, DetectionOutcome, DetectorServingSpec>, "submit">;
  /** Whether a detector version serves now: without one, a frame with no client boxes is one whole-frame person. */
  serving(): boolean;
}

export interface FrameProcessorOptions {
  readonly limits: InferenceLimits;
  readonly frameTraceRatio: number;
  readonly modelName: string;
  /** The person detector, when the inferencer runs one (POSELOOP_DETECTOR_MODEL). */
  readonly detector?: DetectorStage;
  /** The pose version a frame with no people is answered for (no pose batch runs for it). */
  readonly poseModel?: () => ModelRef | undefined;
}

/** The people of a frame before the pose model: boxes to crop, none found, or the detector's verdict. */
type PeoplePlan =
  | { readonly kind: "pose"; readonly job: FrameJob; readonly detection?: DetectionResult }
  | { readonly kind: "none"; readonly detection?: DetectionResult };

interface DetectionResult {
  readonly outcome: DetectionOutcome & { readonly ok: true };
  readonly detector: ModelRef;
  readonly queueUs: number;
}

/** Where a frame comes from: the trace context of its call, span attributes of its stream, and the logger of its call. */
export interface FrameCall {
  /**
   * The call's context. A frame of a stream (`stream` set) starts a trace of its own whose root links to the
   * stream's span in it; a single image's frame is a child of its call's span.
   */
  readonly parent: Context;
  readonly attributes?: Readonly<Record<string, string>>;
  readonly logger: Logger;
  /** The stream the frame belongs to, so that the scheduler can take turns between streams. */
  readonly stream?: string;
}

/** A frame's outcome before per-stream smoothing and tracking. */
export interface ProcessedFrame {
  readonly frame: Frame;
  readonly ok: boolean;
  readonly estimates: readonly PersonEstimate[];
  readonly result: FrameResultInit;
  readonly span: Span | undefined;
  readonly received: bigint;
  /** The decoded frame's colour histogram, when its settings asked for one. */
  readonly histogram?: Float32Array;
  /**
   * The OKS sigmas of the pose model that ran the frame (oks-sigmas.ts); absent when no pose model ran it, or
   * when its manifest names none and its schema is not one PoseLoop knows.
   */
  readonly oksSigmas?: readonly number[];
}

/**
 * Called with a frame's pose job once its people are known (the client's boxes, the whole frame, or the
 * detector's boxes with the pixels the detector decoded), as the job leaves for the pose batch: a trial runs the
 * other model on exactly these crops, and the detector runs once for both.
 */
export type PoseJobObserver = (job: FrameJob) => void;

/**
 * Runs one frame through the shared batch scheduler and builds its FrameResult: the model version that ran it,
 * per-stage timings, a per-frame status (a bad frame fails alone), and a frame span (sampled) carrying the
 * model name, version and training job id with a link to the publication of that version. Counts every frame
 * by outcome and records its stage latencies.
 *
 * A stream's frames get a trace each, not one window of frames per trace: a frame is the unit a user follows
 * (FrameResult.trace_id names its trace, its latency is the frame's), POSELOOP_FRAME_TRACE_RATIO samples frames,
 * and a trace per window would be one more open-ended trace whose end waits for the window's last frame. The
 * root span links to the stream's span (the StreamKeypoints call) and to the publication of the model version,
 * so both the stream and the training run stay one click away.
 *
 * The people of a frame come from its settings' person source: the client's boxes, the whole frame, or the
 * person detector, which runs first on its own batch lane; its boxes (max_persons of them, best first) are the
 * pose model's crops, from the frame the detector's worker already decoded. A frame with no people runs no pose
 * batch at all.
 */
export class FrameProcessor {
  readonly #scheduler: BatchScheduler;
  readonly #limits: InferenceLimits;
  readonly #traceRatio: number;
  readonly #modelName: string;
  readonly #frames: Counter;
  readonly #duration: Histogram;
  readonly #detector: DetectorStage | undefined;
  readonly #poseModel: () => ModelRef | undefined;

  constructor(scheduler: BatchScheduler, options: FrameProcessorOptions) {
    this.#scheduler = scheduler;
    this.#limits = options.limits;
    this.#traceRatio = options.frameTraceRatio;
    this.#modelName = options.modelName;
    this.#detector = options.detector;
    this.#poseModel = options.poseModel ?? (() => undefined);
    this.#frames = framesCounter();
    this.#duration = frameDurationHistogram();
  }

  /**
   * `logger` gets the detail of internal failures, which the frame's status only names by a log reference.
   * Never rejects: whatever goes wrong becomes the frame's status.
   */
  async process(frame: Frame, settings: FrameSettings, call: FrameCall, onPoseJob?: PoseJobObserver): Promise<ProcessedFrame> {
    const { parent, logger } = call;
    const received = process.hrtime.bigint();
    const span = this.#traceRatio > 0 && Math.random() < this.#traceRatio ? this.#startSpan(frame, call) : undefined;
    const spanContext = span === undefined ? parent : trace.setSpan(parent, span);
    const base = { frameId: frame.frameId, ptsUs: frame.ptsUs, traceId: span === undefined ? "" : traceIdOf(trace.setSpan(otelContext.active(), span)) };
    const elapsedUs = (): number => Number((process.hrtime.bigint() - received) / 1000n);
    try {
      const job = frameJob(frame, settings, this.#limits);
      const plan = await this.#people(job, settings, call, span);
      const detection = plan.detection;
      const detected = detection === undefined ? {} : { detector: detection.detector };
      const detectTimings = detection?.outcome.timings ?? { decodeUs: 0, preprocessUs: 0, inferenceUs: 0, postprocessUs: 0 };
      const detectStage = detection === undefined ? {} : { detect: detectTimings.preprocessUs + detectTimings.inferenceUs + detectTimings.postprocessUs };
      const histogram = detection?.outcome.histogram;
      if (plan.kind === "none") {
        // Nobody to crop: answered without a pose batch, for the pose version serving now.
        const timings = { queueUs: detection?.queueUs ?? 0, decodeUs: Math.round(detectTimings.decodeUs), preprocessUs: Math.round(detectTimings.preprocessUs), inferenceUs: Math.round(detectTimings.inferenceUs), postprocessUs: Math.round(detectTimings.postprocessUs), totalUs: elapsedUs() };
        span?.setAttribute("poseloop.frame.persons", 0);
        this.#record(spanContext, "ok", { ...(detection === undefined ? {} : { decode: timings.decodeUs }), ...detectStage, total: timings.totalUs });
        const model = this.#poseModel();
        return {
          frame,
          ok: true,
          estimates: [],
          span,
          received,
          ...(histogram === undefined ? {} : { histogram }),
          result: { ...base, ...(model === undefined ? {} : { model }), ...detected, status: { code: Code.OK, message: "" }, timings, imageWidth: detection?.outcome.width ?? 0, imageHeight: detection?.outcome.height ?? 0 },
        };
      }
      const scheduled = this.#scheduler.submit(plan.job, call.stream);
      onPoseJob?.(plan.job);
      const { outcome, handle, queueUs } = await scheduled;
      this.#annotate(span, handle);
      // A detected frame's stages add up: its decode is the detector worker's, its pose batch crops the decoded pixels.
      const timings = {
        queueUs: queueUs + (detection?.queueUs ?? 0),
        decodeUs: Math.round(outcome.timings.decodeUs + detectTimings.decodeUs),
        preprocessUs: Math.round(outcome.timings.preprocessUs + detectTimings.preprocessUs),
        inferenceUs: Math.round(outcome.timings.inferenceUs + detectTimings.inferenceUs),
        postprocessUs: Math.round(outcome.timings.postprocessUs + detectTimings.postprocessUs),
        totalUs: elapsedUs(),
      };
      if (!outcome.ok) {
        const failure = clientError(new AppError(isCode(outcome.code) ? outcome.code : Code.INTERNAL, outcome.message), logger, "frame failed in the inference worker");
        span?.setStatus({ code: SpanStatusCode.ERROR, message: failure.message });
        this.#record(spanContext, "error", { total: timings.totalUs });
        return { frame, ok: false, estimates: [], span, received, result: { ...base, model: handle.ref, ...detected, status: { code: failure.code, message: failure.message }, timings } };
      }
      span?.setAttribute("poseloop.frame.persons", outcome.persons.length);
      this.#record(spanContext, "ok", { decode: timings.decodeUs, ...detectStage, pose: outcome.timings.preprocessUs + outcome.timings.inferenceUs, post: outcome.timings.postprocessUs, total: timings.totalUs });
      const frameHistogram = outcome.histogram ?? histogram;
      const oksSigmas = handle.spec.oksSigmas;
      return {
        frame,
        ok: true,
        estimates: detection === undefined ? outcome.persons : withDetectionScores(outcome.persons, detection.outcome.boxes),
        span,
        received,
        ...(frameHistogram === undefined ? {} : { histogram: frameHistogram }),
        ...(oksSigmas === undefined ? {} : { oksSigmas }),
        result: { ...base, model: handle.ref, ...detected, status: { code: Code.OK, message: "" }, timings, imageWidth: outcome.width, imageHeight: outcome.height },
      };
    } catch (error) {
      // Frame checks throw AppErrors a client can act on; anything else is ours to log, not the client's to read.
      const appError = clientError(error, logger, "frame failed");
      span?.setStatus({ code: SpanStatusCode.ERROR, message: appError.message });
      const totalUs = elapsedUs();
      this.#record(spanContext, "error", { total: totalUs });
      return { frame, ok: false, estimates: [], span, received, result: { ...base, status: { code: appError.code, message: appError.message }, timings: { totalUs } } };
    }
  }

  /**
   * Whose keypoints the frame asks for. UNSPECIFIED takes the client's boxes when the frame has any, else the
   * detector's when a detector serves, else the whole frame; a detector's boxes replace the frame's image with
   * the pixels its worker decoded. Throws FAILED_PRECONDITION for DETECTOR with none serving, and the detector
   * worker's status for a frame it could not run (a corrupt image: INVALID_ARGUMENT).
   */
  async #people(job: FrameJob, settings: FrameSettings, call: FrameCall, span: Span | undefined): Promise<PeoplePlan> {
    const people = settings.people ?? AUTO_PERSON_SOURCE;
    const source = people.personSource;
    if (source === PersonSource.WHOLE_FRAME) return { kind: "pose", job: { ...job, boxes: [] } };
    if (source === PersonSource.CLIENT_BOXES) return job.boxes.length === 0 ? { kind: "none" } : { kind: "pose", job };
    const detector = this.#detector;
    if (source !== PersonSource.DETECTOR && (job.boxes.length > 0 || detector?.serving() !== true)) return { kind: "pose", job };
    if (detector === undefined || !detector.serving()) throw new AppError(Code.FAILED_PRECONDITION, "person_source DETECTOR: no person detector is serving");
    const { outcome, handle, queueUs } = await detector.scheduler.submit(
      {
        image: job.image,
        ...(people.scoreThreshold === undefined ? {} : { scoreThreshold: people.scoreThreshold }),
        ...(people.iouThreshold === undefined ? {} : { iouThreshold: people.iouThreshold }),
        ...(job.maxPersons > 0 ? { maxDetections: job.maxPersons } : {}),
        ...(job.histogram === true ? { histogram: true } : {}),
      },
      call.stream,
    );
    span?.setAttribute("poseloop.detector.version", handle.version);
    if (!outcome.ok) throw new AppError(isCode(outcome.code) ? outcome.code : Code.INTERNAL, outcome.message);
    const detection = { outcome, detector: handle.ref, queueUs };
    if (outcome.boxes.length === 0) return { kind: "none", detection };
    const { histogram: _measured, ...pose } = job;
    return { kind: "pose", detection, job: { ...pose, image: outcome.image, boxes: outcome.boxes.map(({ x, y, width, height }) => ({ x, y, width, height })) } };
  }

  #startSpan(frame: Frame, call: FrameCall): Span {
    const attributes = { "poseloop.frame.id": frame.frameId.toString(), "poseloop.model.name": this.#modelName, ...call.attributes };
    const tracer = trace.getTracer("@poseloop/inferencer");
    if (call.stream === undefined) return tracer.startSpan("frame", { kind: SpanKind.CONSUMER, attributes }, call.parent);
    const stream = trace.getSpanContext(call.parent);
    const links: Link[] = stream !== undefined && trace.isSpanContextValid(stream) ? [{ context: stream, attributes: { "poseloop.link": "stream" } }] : [];
    return tracer.startSpan("frame", { kind: SpanKind.CONSUMER, root: true, links, attributes }, call.parent);
  }

  /** The frame's count and stage latencies (µs in, seconds out), in its span's context. */
  #record(ctx: Context, outcome: FrameOutcomeLabel, stagesUs: Partial<Record<FrameStage, number>>): void {
    otelContext.with(ctx, () => {
      this.#frames.add(1, { "poseloop.model.name": this.#modelName, outcome });
      for (const [stage, us] of Object.entries(stagesUs)) this.#duration.record(us / 1e6, { stage });
    });
  }

  #annotate(span: Span | undefined, handle: ServingHandle): void {
    if (span === undefined) return;
    span.setAttribute("poseloop.model.version", handle.version);
    span.setAttribute("poseloop.training.job_id", handle.trainingJobId);
    if (handle.publishLink !== undefined) span.addLink(handle.publishLink);
  }
}

/**
 * The estimates with their boxes' detector scores (BoundingBox.score): the pose worker hands each person's box
 * back as it got it, so a box is found again by its coordinates.
 */
function withDetectionScores(persons: readonly PersonEstimate[], boxes: readonly DetectedBox[]): PersonEstimate[] {
  return persons.map((person) => {
    const { x, y, width, height } = person.bbox;
    const box = boxes.find((b) => b.x === x && b.y === y && b.width === width && b.height === height);
    return box === undefined ? person : { ...person, bbox: { x, y, width, height, score: box.score } as PersonEstimate["bbox"] };
  });
}
