/**
 * gRPC status codes (google.rpc.Code), the one error vocabulary of PoseLoop from libraries to the wire.
 */
export const Code = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

export type Code = (typeof Code)[keyof typeof Code];

const codeNames = new Map<number, string>(Object.entries(Code).map(([name, value]) => [value, name]));

/** The name of a code ("INVALID_ARGUMENT"), or "CODE_<n>" for a number outside the set. */
export function codeName(code: number): string {
  return codeNames.get(code) ?? `CODE_${code}`;
}

export function isCode(value: unknown): value is Code {
  return typeof value === "number" && codeNames.has(value);
}

export interface AppErrorOptions {
  cause?: unknown;
  /** Every problem found, when there are several (an invalid config lists them all). */
  problems?: readonly string[];
}

/**
 * The error every PoseLoop library throws. Its message is written for the user and is safe to send to a
 * client; what went wrong inside (paths, stacks, native errors) stays in `cause`, which is logged, never sent.
 */
export class AppError extends Error {
  override readonly name = "AppError";
  readonly code: Code;
  readonly problems: readonly string[];

  constructor(code: Code, message: string, options: AppErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.problems = Object.freeze([...(options.problems ?? [])]);
  }

  /** An INVALID_ARGUMENT that names every problem, e.g. all the invalid fields of a config at once. */
  static invalid(subject: string, problems: readonly string[], cause?: unknown): AppError {
    const count = problems.length === 1 ? "1 problem" : `${problems.length} problems`;
    return new AppError(Code.INVALID_ARGUMENT, `invalid ${subject} (${count}): ${problems.join("; ")}`, {
      problems,
      ...(cause === undefined ? {} : { cause }),
    });
  }

  /**
   * Converts anything thrown into an AppError. Aborts, timeouts and Node system errors get their matching
   * code and a message without paths; any other error becomes INTERNAL with a generic message, the original
   * kept as the cause.
   */
  static from(error: unknown, fallback: Code = Code.INTERNAL): AppError {
    if (error instanceof AppError) return error;
    if (error instanceof Error) {
      if (error.name === "AbortError") return new AppError(Code.CANCELLED, "operation cancelled", { cause: error });
      if (error.name === "TimeoutError") {
        return new AppError(Code.DEADLINE_EXCEEDED, "operation timed out", { cause: error });
      }
      const system = systemErrorCodes[(error as NodeJS.ErrnoException).code ?? ""];
      if (system !== undefined) return new AppError(system.code, system.message, { cause: error });
    }
    return new AppError(fallback, fallback === Code.INTERNAL ? "internal error" : codeName(fallback).toLowerCase(), {
      cause: error,
    });
  }

  /** Whether `error` is an AppError, optionally with one of the given codes. */
  static is(error: unknown, ...codes: Code[]): error is AppError {
    return error instanceof AppError && (codes.length === 0 || codes.includes(error.code));
  }
}

const systemErrorCodes: Readonly<Record<string, { code: Code; message: string }>> = {
  ECONNREFUSED: { code: Code.UNAVAILABLE, message: "connection refused" },
  ECONNRESET: { code: Code.UNAVAILABLE, message: "connection reset" },
  EHOSTUNREACH: { code: Code.UNAVAILABLE, message: "host unreachable" },
  ENETUNREACH: { code: Code.UNAVAILABLE, message: "network unreachable" },
  ENOTFOUND: { code: Code.UNAVAILABLE, message: "host not found" },
  EPIPE: { code: Code.UNAVAILABLE, message: "connection closed" },
  ETIMEDOUT: { code: Code.DEADLINE_EXCEEDED, message: "operation timed out" },
  ENOENT: { code: Code.NOT_FOUND, message: "not found" },
  EEXIST: { code: Code.ALREADY_EXISTS, message: "already exists" },
  EACCES: { code: Code.PERMISSION_DENIED, message: "permission denied" },
  EPERM: { code: Code.PERMISSION_DENIED, message: "permission denied" },
  ENOSPC: { code: Code.RESOURCE_EXHAUSTED, message: "no space left on device" },
  EMFILE: { code: Code.RESOURCE_EXHAUSTED, message: "too many open files" },
  ENOMEM: { code: Code.RESOURCE_EXHAUSTED, message: "out of memory" },
};
