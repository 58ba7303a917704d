import { create } from "@bufbuild/protobuf";
import { context } from "@opentelemetry/api";
import { AppError, Code, silentLogger, type LogFields, type Logger } from "@poseloop/core";
import { FrameSchema, ImageFormat } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { describe, expect, it } from "vitest";
import type { BatchScheduler, ScheduledResult } from "./batch-scheduler.js";
import type { InferenceLimits } from "./config.js";
import { FrameProcessor } from "./frame-processor.js";

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
});
