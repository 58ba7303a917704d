import { create } from "@bufbuild/protobuf";
import { context, trace } from "@opentelemetry/api";
import { AppError, Code, silentLogger, type LogFields, type Logger } from "@poseloop/core";
import { FrameSchema, ImageFormat } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { installTestTelemetry, withSpan } from "@poseloop/telemetry";
import { describe, expect, it } from "vitest";
import type { BatchScheduler, ScheduledResult } from "./batch-scheduler.js";
import type { InferenceLimits } from "./config.js";
import { FrameProcessor } from "./frame-processor.js";
import type { ServingHandle } from "./serving-handle.js";

const limits = { maxFrameBytes: 1 << 20, maxFramePixels: 1 << 22, maxBoxesPerFrame: 64 } as InferenceLimits;
const NATIVE = "/build/onnxruntime/core/providers/cpu/nn/conv.cc:123 onnxruntime::Conv<float>::Compute Invalid input shape";

function recordingLogger(): { logger: Logger; lines: { msg: string; fields: LogFields }[] } {
  const lines: { msg: string; fields: LogFields }[] = [];
  const logger: Logger = {
    ...silentLogger,
    error: (msg, fields = {}) => lines.push({ msg, fields }),
    child: () => logger,
  };
  return { logger, lines };
}

function processorWith(submit: () => Promise<ScheduledResult>): FrameProcessor {
  return new FrameProcessor({ submit } as unknown as BatchScheduler, { limits, frameTraceRatio: 0, modelName: "demo" });
}

const frame = create(FrameSchema, { frameId: 3n, image: { case: "encoded", value: { data: Uint8Array.from([0xff, 0xd8, 0xff, 0xe0]), format: ImageFormat.JPEG } } });
const settings = { flipTest: false, minKeypointScore: 0.2, maxPersons: 0 };

describe("FrameProcessor", () => {
  it("answers an internal failure with a log reference, never the native text; the log holds both", async () => {
    const { logger, lines } = recordingLogger();
    const processor = processorWith(() => Promise.reject(new AppError(Code.INTERNAL, NATIVE)));
    const processed = await processor.process(frame, settings, { parent: context.active(), logger });
    expect(processed.ok).toBe(false);
    expect(processed.result.status?.code).toBe(Code.INTERNAL);
    const message = processed.result.status?.message ?? "";
    expect(message).toMatch(/^internal error \(ref ([0-9a-f]+)\)$/);
    const ref = /ref ([0-9a-f]+)/.exec(message)?.[1];
    expect(lines).toHaveLength(1);
    expect(lines[0]?.fields.ref).toBe(ref);
    expect(String((lines[0]?.fields.err as AppError).message)).toContain("conv.cc:123");
  });

  it("keeps a failure the client can act on as it is", async () => {
    const { logger, lines } = recordingLogger();
    const processor = processorWith(() => Promise.reject(new AppError(Code.UNAVAILABLE, "no model version is loaded yet")));
    const processed = await processor.process(frame, settings, { parent: context.active(), logger });
    expect(processed.result.status).toMatchObject({ code: Code.UNAVAILABLE, message: "no model version is loaded yet" });
    expect(lines).toHaveLength(0);
  });

  it("gives each frame of a stream a trace of its own, linked to the stream's span and to the model's publication", async () => {
    const telemetry = installTestTelemetry("inferencer");
    try {
      const tracer = telemetry.tracer();
      const publication = await withSpan(tracer, "training.publish", {}, (span) => span.spanContext());
      const handle = { version: "v1", ref: { name: "demo", version: "v1" }, spec: { numKeypoints: 17 }, trainingJobId: "job-1", publishLink: { context: publication } } as unknown as ServingHandle;
      const ok: ScheduledResult = { outcome: { ok: true, width: 4, height: 4, persons: [], timings: { decodeUs: 1, preprocessUs: 1, inferenceUs: 1, postprocessUs: 1 } }, handle, queueUs: 0 };
      const processor = new FrameProcessor({ submit: () => Promise.resolve(ok) } as unknown as BatchScheduler, { limits, frameTraceRatio: 1, modelName: "demo" });
      const streamSpan = tracer.startSpan("poseloop.inference.v1.InferenceService/StreamKeypoints");
      const streamContext = trace.setSpan(context.active(), streamSpan);
      const results = [];
      for (const frameId of [1n, 2n]) {
        const processed = await processor.process({ ...frame, frameId }, settings, { parent: streamContext, logger: silentLogger, stream: "s1" });
        processed.span?.end();
        results.push(processed.result);
      }
      const frames = telemetry.spansNamed("frame");
      expect(frames).toHaveLength(2);
      const stream = streamSpan.spanContext();
      for (const [i, span] of frames.entries()) {
        // A root span: not a child of the never-ending stream call, so each frame's trace ends with the frame.
        expect(span.parentSpanContext).toBeUndefined();
        expect(span.spanContext().traceId).not.toBe(stream.traceId);
        expect(results[i]?.traceId).toBe(span.spanContext().traceId);
        expect(span.links.map((link) => link.context)).toEqual([
          expect.objectContaining({ traceId: stream.traceId, spanId: stream.spanId }),
          expect.objectContaining({ traceId: publication.traceId, spanId: publication.spanId }),
        ]);
        expect(span.attributes).toMatchObject({ "poseloop.model.version": "v1", "poseloop.training.job_id": "job-1" });
      }
      expect(frames[0]?.spanContext().traceId).not.toBe(frames[1]?.spanContext().traceId);

      // A single image (DetectKeypoints) is a child of its short call's span.
      const detected = await processor.process(frame, settings, { parent: streamContext, logger: silentLogger });
      detected.span?.end();
      const single = telemetry.spansNamed("frame")[2];
      expect(single?.parentSpanContext?.spanId).toBe(stream.spanId);
      expect(single?.spanContext().traceId).toBe(stream.traceId);
      streamSpan.end();
    } finally {
      await telemetry.shutdown();
    }
  });
});
