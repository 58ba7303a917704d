import {
  context as otelContext,
  propagation,
  trace,
  type Context,
  type Link,
  type TextMapGetter,
  type TextMapSetter,
} from "@opentelemetry/api";

/** The part of @grpc/grpc-js's Metadata that propagation needs (kept structural: no grpc dependency here). */
export interface MetadataCarrier {
  get(key: string): Array<string | Buffer>;
  set(key: string, value: string): void;
  getMap(): Record<string, unknown>;
}

/** The part of a NATS MsgHdrs that propagation needs. */
export interface HeadersCarrier {
  get(key: string): string;
  set(key: string, value: string): void;
  has(key: string): boolean;
  keys(): string[];
}

const metadataGetter: TextMapGetter<MetadataCarrier> = {
  keys: (carrier) => Object.keys(carrier.getMap()),
  get: (carrier, key) => {
    const values = carrier.get(key).filter((value): value is string => typeof value === "string");
    return values.length === 0 ? undefined : values.length === 1 ? values[0] : values;
  },
};

const metadataSetter: TextMapSetter<MetadataCarrier> = {
  set: (carrier, key, value) => carrier.set(key, value),
};

const headersGetter: TextMapGetter<HeadersCarrier> = {
  keys: (carrier) => carrier.keys(),
  get: (carrier, key) => {
    // NATS header names keep their case; W3C propagators ask in lower case.
    const match = carrier.keys().find((name) => name.toLowerCase() === key);
    return match === undefined ? undefined : carrier.get(match);
  },
};

const headersSetter: TextMapSetter<HeadersCarrier> = {
  set: (carrier, key, value) => carrier.set(key, value),
};

const recordGetter: TextMapGetter<Readonly<Record<string, string>>> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => carrier[key],
};

const recordSetter: TextMapSetter<Record<string, string>> = {
  set: (carrier, key, value) => {
    carrier[key] = value;
  },
};

/** Writes `ctx`'s trace context (traceparent, tracestate, baggage) into gRPC metadata. */
export function injectIntoMetadata(metadata: MetadataCarrier, ctx: Context = otelContext.active()): void {
  propagation.inject(ctx, metadata, metadataSetter);
}

/** The trace context carried by incoming gRPC metadata, on top of `base`. */
export function extractFromMetadata(metadata: MetadataCarrier, base: Context = otelContext.active()): Context {
  return propagation.extract(base, metadata, metadataGetter);
}

/** Writes `ctx`'s trace context into NATS message headers. */
export function injectIntoHeaders(headers: HeadersCarrier, ctx: Context = otelContext.active()): void {
  propagation.inject(ctx, headers, headersSetter);
}

/** The trace context carried by NATS message headers, on top of `base`. */
export function extractFromHeaders(headers: HeadersCarrier | undefined, base: Context = otelContext.active()): Context {
  return headers === undefined ? base : propagation.extract(base, headers, headersGetter);
}

/** `ctx`'s trace context as a plain map, for storing in a record (e.g. the registry's serving version). */
export function traceContextToRecord(ctx: Context = otelContext.active()): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(ctx, carrier, recordSetter);
  return carrier;
}

/** The trace context stored by traceContextToRecord, on top of `base`. */
export function traceContextFromRecord(
  record: Readonly<Record<string, string>>,
  base: Context = otelContext.active(),
): Context {
  return propagation.extract(base, record, recordGetter);
}

/**
 * A span link to the span active in `ctx`, or undefined when `ctx` carries none. Consumers of a message link
 * to its producer instead of becoming its child, so that one publish can fan out to many traces.
 */
export function linkTo(ctx: Context, attributes?: Link["attributes"]): Link | undefined {
  const spanContext = trace.getSpanContext(ctx);
  if (spanContext === undefined || !trace.isSpanContextValid(spanContext)) return undefined;
  return attributes === undefined ? { context: spanContext } : { context: spanContext, attributes };
}
