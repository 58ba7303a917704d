import { AppError, Code } from "@poseloop/core";

/**
 * Maps nats.js errors to AppErrors: timeouts and lost connections are UNAVAILABLE (worth retrying), a wrong
 * last-sequence on a KV write is ABORTED (a stale compare-and-set), anything else INTERNAL.
 */
export function fromNatsError(error: unknown, what: string): AppError {
  if (error instanceof AppError) return error;
  const message = error instanceof Error ? error.message : String(error);
  const name = error instanceof Error ? error.name : "";
  if (/wrong last sequence|key exists/i.test(message)) {
    return new AppError(Code.ABORTED, `${what}: the value changed since it was read (stale revision)`, { cause: error });
  }
  if (/timeout|TIMEOUT|disconnect|closed|no responders|503|connection/i.test(`${name} ${message}`)) {
    return new AppError(Code.UNAVAILABLE, `${what}: NATS is unavailable`, { cause: error });
  }
  if (/not found|404/i.test(message)) return new AppError(Code.NOT_FOUND, `${what}: not found`, { cause: error });
  return new AppError(Code.INTERNAL, `${what} failed`, { cause: error });
}
