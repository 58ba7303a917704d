import { context, trace } from "@opentelemetry/api";
import { afterEach, describe, expect, it } from "vitest";
import {
  extractFromHeaders,
  injectIntoHeaders,
  installTestTelemetry,
  linkTo,
  traceContextFromRecord,
  traceContextToRecord,
  traceIdOf,
  withSpan,
  type HeadersCarrier,
  type TestTelemetry,
} from "@poseloop/telemetry";

let telemetry: TestTelemetry | undefined;
afterEach(async () => {
  await telemetry?.shutdown();
  telemetry = undefined;
});

/** A carrier with case-preserving names, as NATS headers are. */
function headers(): HeadersCarrier & { map: Map<string, string> } {
  const map = new Map<string, string>();
  return {
    map,
    get: (key) => map.get(key) ?? "",
    set: (key, value) => void map.set(key, value),
    has: (key) => map.has(key),
    keys: () => [...map.keys()],
  };
}

describe("trace propagation", () => {
  it("injects traceparent into headers and extracts the same trace on the other side", async () => {
    telemetry = installTestTelemetry();
    const carrier = headers();
    const tracer = telemetry.tracer();
    const producer = await withSpan(tracer, "publish", {}, async (span) => {
      injectIntoHeaders(carrier);
      return span.spanContext();
    });
    expect(carrier.map.get("traceparent")).toBe(`00-${producer.traceId}-${producer.spanId}-01`);
    // Header names may arrive in another case.
    const upper = headers();
    upper.set("Traceparent", carrier.map.get("traceparent") ?? "");
    const extracted = extractFromHeaders(upper, context.active());
    expect(trace.getSpanContext(extracted)?.traceId).toBe(producer.traceId);
    expect(linkTo(extracted)?.context.spanId).toBe(producer.spanId);
    expect(linkTo(context.active())).toBeUndefined();
  });

  it("round-trips a context through a plain record (stored in the registry's serving record)", async () => {
    telemetry = installTestTelemetry();
    const tracer = telemetry.tracer();
    await withSpan(tracer, "set-serving", {}, async () => {
      const record = traceContextToRecord();
      const restored = traceContextFromRecord(record, context.active());
      expect(traceIdOf(restored)).toBe(traceIdOf());
    });
  });

  it("records a thrown error on the span and rethrows it", async () => {
    telemetry = installTestTelemetry();
    await expect(withSpan(telemetry.tracer(), "failing", {}, () => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
    const span = telemetry.spansNamed("failing")[0];
    expect(span?.status.code).toBe(2);
    expect(span?.events[0]?.name).toBe("exception");
  });
});
