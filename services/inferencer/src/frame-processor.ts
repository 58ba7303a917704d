import type { MessageInitShape } from "@bufbuild/protobuf";
import { context as otelContext, SpanKind, SpanStatusCode, trace, type Context, type Span } from "@opentelemetry/api";
import { AppError, Code } from "@poseloop/core";
import type { Frame, FrameResultSchema } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { traceIdOf } from "@poseloop/telemetry";
import type { BatchScheduler } from "./batch-scheduler.js";
import type { InferenceLimits } from "./config.js";
import { frameJob, type FrameSettings } from "./frame-conversion.js";
import type { PersonEstimate } from "@poseloop/estimator";
import type { ServingHandle } from "./serving-handle.js";

export type FrameResultInit = MessageInitShape<typeof FrameResultSchema>;

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

  async process(frame: Frame, settings: FrameSettings, parent: Context, attributes: Readonly<Record<string, string>> = {}): Promise<ProcessedFrame> {
    const received = process.hrtime.bigint();
    const span = this.#traceRatio > 0 && Math.random() < this.#traceRatio
      ? trace.getTracer("@poseloop/inferencer").startSpan("frame", { kind: SpanKind.CONSUMER, attributes: { "poseloop.frame.id": frame.frameId.toString(), "poseloop.model.name": this.#modelName, ...attributes } }, parent)
      : undefined;
    const base = { frameId: frame.frameId, ptsUs: frame.ptsUs, traceId: span === undefined ? "" : traceIdOf(trace.setSpan(otelContext.active(), span)) };
    try {
      const job = frameJob(frame, settings, this.#limits);
      const { outcome, handle, queueUs } = await this.#scheduler.submit(job);
      this.#annotate(span, handle);
      const timings = { queueUs, decodeUs: Math.round(outcome.timings.decodeUs), preprocessUs: Math.round(outcome.timings.preprocessUs), inferenceUs: Math.round(outcome.timings.inferenceUs), postprocessUs: Math.round(outcome.timings.postprocessUs), totalUs: Number((process.hrtime.bigint() - received) / 1000n) };
      if (!outcome.ok) {
        span?.setStatus({ code: SpanStatusCode.ERROR, message: outcome.message });
        return { frame, ok: false, estimates: [], span, received, result: { ...base, model: handle.ref, status: { code: outcome.code, message: outcome.message }, timings } };
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
      const appError = AppError.from(error, Code.INVALID_ARGUMENT);
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
