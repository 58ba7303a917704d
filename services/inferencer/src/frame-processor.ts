import type { MessageInitShape } from "@bufbuild/protobuf";
import { context as otelContext, SpanKind, SpanStatusCode, trace, type Context, type Span } from "@opentelemetry/api";
import { AppError, Code, isCode, type Logger } from "@poseloop/core";
import type { Frame, FrameResultSchema } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { traceIdOf } from "@poseloop/telemetry";
import type { BatchScheduler } from "./batch-scheduler.js";
import type { InferenceLimits } from "./config.js";
import { frameJob, type FrameSettings } from "./frame-conversion.js";
import type { PersonEstimate } from "@poseloop/estimator";
import { clientError } from "./client-error.js";
import type { ServingHandle } from "./serving-handle.js";

export type FrameResultInit = MessageInitShape<typeof FrameResultSchema>;

/** Where a frame comes from: the trace parent, span attributes of its stream, and the logger of its call. */
export interface FrameCall {
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
 * model name, version and training job id with a link to the publication of that version.
 */
export class FrameProcessor {
  readonly #scheduler: BatchScheduler;
  readonly #limits: InferenceLimits;
  readonly #traceRatio: number;
  readonly #modelName: string;

  constructor(scheduler: BatchScheduler, options: { limits: InferenceLimits; frameTraceRatio: number; modelName: string }) {
    this.#scheduler = scheduler;
    this.#limits = options.limits;
    this.#traceRatio = options.frameTraceRatio;
    this.#modelName = options.modelName;
  }

  /**
   * `logger` gets the detail of internal failures, which the frame's status only names by a log reference.
   * Never rejects: whatever goes wrong becomes the frame's status.
   */
  async process(frame: Frame, settings: FrameSettings, call: FrameCall): Promise<ProcessedFrame> {
    const { parent, attributes = {}, logger } = call;
    const received = process.hrtime.bigint();
    const span = this.#traceRatio > 0 && Math.random() < this.#traceRatio
      ? trace.getTracer("@poseloop/inferencer").startSpan("frame", { kind: SpanKind.CONSUMER, attributes: { "poseloop.frame.id": frame.frameId.toString(), "poseloop.model.name": this.#modelName, ...attributes } }, parent)
      : undefined;
    const base = { frameId: frame.frameId, ptsUs: frame.ptsUs, traceId: span === undefined ? "" : traceIdOf(trace.setSpan(otelContext.active(), span)) };
    try {
      const job = frameJob(frame, settings, this.#limits);
      const { outcome, handle, queueUs } = await this.#scheduler.submit(job, call.stream);
      this.#annotate(span, handle);
      const timings = { queueUs, decodeUs: Math.round(outcome.timings.decodeUs), preprocessUs: Math.round(outcome.timings.preprocessUs), inferenceUs: Math.round(outcome.timings.inferenceUs), postprocessUs: Math.round(outcome.timings.postprocessUs), totalUs: Number((process.hrtime.bigint() - received) / 1000n) };
      if (!outcome.ok) {
        const failure = clientError(new AppError(isCode(outcome.code) ? outcome.code : Code.INTERNAL, outcome.message), logger, "frame failed in the inference worker");
        span?.setStatus({ code: SpanStatusCode.ERROR, message: failure.message });
        return { frame, ok: false, estimates: [], span, received, result: { ...base, model: handle.ref, status: { code: failure.code, message: failure.message }, timings } };
      }
      span?.setAttribute("poseloop.frame.persons", outcome.persons.length);
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
      return { frame, ok: false, estimates: [], span, received, result: { ...base, status: { code: appError.code, message: appError.message }, timings: { totalUs: Number((process.hrtime.bigint() - received) / 1000n) } } };
    }
  }

  #annotate(span: Span | undefined, handle: ServingHandle): void {
    if (span === undefined) return;
    span.setAttribute("poseloop.model.version", handle.version);
    span.setAttribute("poseloop.training.job_id", handle.trainingJobId);
    if (handle.publishLink !== undefined) span.addLink(handle.publishLink);
  }
}
