import type { MessageInitShape } from "@bufbuild/protobuf";
import { context as otelContext, SpanKind, SpanStatusCode, trace, type Context, type Counter, type Histogram, type Link, type Span } from "@opentelemetry/api";
import { AppError, Code, isCode, type Logger } from "@poseloop/core";
import type { Frame, FrameResultSchema } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { traceIdOf } from "@poseloop/telemetry";
import type { BatchScheduler } from "./batch-scheduler.js";
import type { InferenceLimits } from "./config.js";
import { frameJob, type FrameSettings } from "./frame-conversion.js";
import type { PersonEstimate } from "@poseloop/estimator";
import { clientError } from "./client-error.js";
import { frameDurationHistogram, framesCounter, type FrameOutcomeLabel, type FrameStage } from "./metrics.js";
import type { ServingHandle } from "./serving-handle.js";

export type FrameResultInit = MessageInitShape<typeof FrameResultSchema>;

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
}

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
 */
export class FrameProcessor {
  readonly #scheduler: BatchScheduler;
  readonly #limits: InferenceLimits;
  readonly #traceRatio: number;
  readonly #modelName: string;
  readonly #frames: Counter;
  readonly #duration: Histogram;

  constructor(scheduler: BatchScheduler, options: { limits: InferenceLimits; frameTraceRatio: number; modelName: string }) {
    this.#scheduler = scheduler;
    this.#limits = options.limits;
    this.#traceRatio = options.frameTraceRatio;
    this.#modelName = options.modelName;
    this.#frames = framesCounter();
    this.#duration = frameDurationHistogram();
  }

  /**
   * `logger` gets the detail of internal failures, which the frame's status only names by a log reference.
   * Never rejects: whatever goes wrong becomes the frame's status.
   */
  async process(frame: Frame, settings: FrameSettings, call: FrameCall): Promise<ProcessedFrame> {
    const { parent, logger } = call;
    const received = process.hrtime.bigint();
    const span = this.#traceRatio > 0 && Math.random() < this.#traceRatio ? this.#startSpan(frame, call) : undefined;
    const spanContext = span === undefined ? parent : trace.setSpan(parent, span);
    const base = { frameId: frame.frameId, ptsUs: frame.ptsUs, traceId: span === undefined ? "" : traceIdOf(trace.setSpan(otelContext.active(), span)) };
    const elapsedUs = (): number => Number((process.hrtime.bigint() - received) / 1000n);
    try {
      const job = frameJob(frame, settings, this.#limits);
      const { outcome, handle, queueUs } = await this.#scheduler.submit(job, call.stream);
      this.#annotate(span, handle);
      const timings = { queueUs, decodeUs: Math.round(outcome.timings.decodeUs), preprocessUs: Math.round(outcome.timings.preprocessUs), inferenceUs: Math.round(outcome.timings.inferenceUs), postprocessUs: Math.round(outcome.timings.postprocessUs), totalUs: elapsedUs() };
      if (!outcome.ok) {
        const failure = clientError(new AppError(isCode(outcome.code) ? outcome.code : Code.INTERNAL, outcome.message), logger, "frame failed in the inference worker");
        span?.setStatus({ code: SpanStatusCode.ERROR, message: failure.message });
        this.#record(spanContext, "error", { total: timings.totalUs });
        return { frame, ok: false, estimates: [], span, received, result: { ...base, model: handle.ref, status: { code: failure.code, message: failure.message }, timings } };
      }
      span?.setAttribute("poseloop.frame.persons", outcome.persons.length);
      this.#record(spanContext, "ok", { decode: timings.decodeUs, pose: outcome.timings.preprocessUs + outcome.timings.inferenceUs, post: timings.postprocessUs, total: timings.totalUs });
      return {
        frame,
        ok: true,
        estimates: outcome.persons,
        span,
        received,
        result: { ...base, model: handle.ref, status: { code: Code.OK, message: "" }, timings, imageWidth: outcome.width, imageHeight: outcome.height },
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
