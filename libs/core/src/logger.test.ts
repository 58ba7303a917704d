import { context, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { describe, expect, it } from "vitest";
import { AppError, Code, createJsonLogger } from "@poseloop/core";

describe("createJsonLogger", () => {
  it("writes one JSON object per line with bindings, fields and the error chain", () => {
    const lines: string[] = [];
    const logger = createJsonLogger({ name: "svc", level: "info", write: (line) => lines.push(line), now: () => 0 });
    logger.debug("hidden");
    logger.child({ job_id: "j1" }).error("failed", {
      err: new AppError(Code.DATA_LOSS, "digest mismatch", { cause: new Error("inner") }),
      size: 10n,
    });
    expect(lines).toHaveLength(1);
    const record = JSON.parse(lines[0] ?? "") as Record<string, unknown>;
    expect(record).toMatchObject({ level: "error", name: "svc", job_id: "j1", msg: "failed", size: "10" });
    expect(record["time"]).toBe("1970-01-01T00:00:00.000Z");
    expect(record["err"]).toMatchObject({ code: Code.DATA_LOSS, message: "digest mismatch", cause: { message: "inner" } });
  });

  it("adds the active span's trace and span ids", () => {
    const manager = new AsyncLocalStorageContextManager().enable();
    context.setGlobalContextManager(manager);
    try {
      const lines: string[] = [];
      const logger = createJsonLogger({ write: (line) => lines.push(line) });
      const span = trace.wrapSpanContext({
        traceId: "0af7651916cd43dd8448eb211c80319c",
        spanId: "b7ad6b7169203331",
        traceFlags: 1,
      });
      context.with(trace.setSpan(context.active(), span), () => logger.info("inside"));
      logger.info("outside");
      const [inside, outside] = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
      expect(inside).toMatchObject({ trace_id: "0af7651916cd43dd8448eb211c80319c", span_id: "b7ad6b7169203331" });
      expect(outside?.["trace_id"]).toBeUndefined();
    } finally {
      context.disable();
    }
  });
});
