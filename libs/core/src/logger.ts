import { trace } from "@opentelemetry/api";

export const LogLevel = {
  debug: 10,
  info: 20,
  warn: 30,
  error: 40,
  silent: 100,
} as const;

export type LogLevel = keyof typeof LogLevel;

export type LogFields = Readonly<Record<string, unknown>>;

/** Structured logging. Libraries take a Logger from their owner and never write to the console. */
export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger that adds `bindings` to every line. */
  child(bindings: LogFields): Logger;
}

export interface JsonLoggerOptions {
  /** Logger name, e.g. the service ("trainer"). */
  name?: string;
  level?: LogLevel;
  /** Where lines go; default process.stdout. */
  write?: (line: string) => void;
  /** Clock for the `time` field; default Date.now. */
  now?: () => number;
}

/**
 * A logger writing one JSON object per line: time, level, name, msg, the active span's trace_id and span_id,
 * then the fields. An `err` field is serialized with its code, stack and cause chain.
 */
export function createJsonLogger(options: JsonLoggerOptions = {}): Logger {
  const threshold = LogLevel[options.level ?? "info"];
  const write = options.write ?? ((line: string) => void process.stdout.write(line));
  const now = options.now ?? Date.now;
  const base: LogFields = options.name === undefined ? {} : { name: options.name };

  const make = (bindings: LogFields): Logger => {
    const log = (level: Exclude<LogLevel, "silent">, msg: string, fields?: LogFields): void => {
      if (LogLevel[level] < threshold) return;
      const record: Record<string, unknown> = { time: new Date(now()).toISOString(), level, ...bindings, msg };
      const span = trace.getActiveSpan()?.spanContext();
      if (span !== undefined && span.traceId !== "00000000000000000000000000000000") {
        record["trace_id"] = span.traceId;
        record["span_id"] = span.spanId;
      }
      if (fields !== undefined) {
        for (const [key, value] of Object.entries(fields)) record[key] = serializeValue(value);
      }
      write(`${safeStringify(record)}\n`);
    };
    return {
      debug: (msg, fields) => log("debug", msg, fields),
      info: (msg, fields) => log("info", msg, fields),
      warn: (msg, fields) => log("warn", msg, fields),
      error: (msg, fields) => log("error", msg, fields),
      child: (more) => make({ ...bindings, ...more }),
    };
  };
  return make(base);
}

/** A logger that drops everything (tests, embedded use). */
export const silentLogger: Logger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  child: () => silentLogger,
};

/** Whether `value` names a log level. */
export function isLogLevel(value: string): value is LogLevel {
  return Object.hasOwn(LogLevel, value);
}

function serializeValue(value: unknown, depth = 0): unknown {
  if (value instanceof Error) return serializeError(value, depth);
  if (typeof value === "bigint") return value.toString();
  return value;
}

function serializeError(error: Error, depth: number): Record<string, unknown> {
  const out: Record<string, unknown> = { name: error.name, message: error.message };
  const code = (error as { code?: unknown }).code;
  if (code !== undefined) out["code"] = code;
  if (error.stack !== undefined) out["stack"] = error.stack;
  const problems = (error as { problems?: unknown }).problems;
  if (Array.isArray(problems) && problems.length > 0) out["problems"] = problems;
  if (error.cause !== undefined && depth < 5) out["cause"] = serializeValue(error.cause, depth + 1);
  return out;
}

/** JSON with bigints as strings, byte arrays summarized, and true cycles (not shared objects) cut. */
function safeStringify(record: Record<string, unknown>): string {
  const ancestors: unknown[] = [];
  return JSON.stringify(record, function (this: unknown, _key, value: unknown) {
    if (typeof value === "bigint") return value.toString();
    if (value instanceof Uint8Array) return `<${value.byteLength} bytes>`;
    if (typeof value !== "object" || value === null) return value;
    // `this` is the object holding `value`: unwind the path to it, then check the path for `value`.
    while (ancestors.length > 0 && ancestors.at(-1) !== this) ancestors.pop();
    if (ancestors.includes(value)) return "[circular]";
    ancestors.push(value);
    return value;
  });
}
