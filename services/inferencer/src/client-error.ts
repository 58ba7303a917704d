import { randomBytes } from "node:crypto";
import { AppError, Code, type Logger } from "@poseloop/core";

// Codes whose message may come from a native library or a bug (onnxruntime paths, C++ symbols, stack text):
// a client gets a reference to the log line instead.
const INTERNAL_CODES: ReadonlySet<Code> = new Set([Code.INTERNAL, Code.UNKNOWN, Code.DATA_LOSS]);

/**
 * The error a client may see for `error`: an AppError a client can act on keeps its code and message; anything
 * internal becomes "internal error (ref <id>)", and the cause is logged under the same ref so that an operator
 * can find it from what the client reports.
 */
export function clientError(error: unknown, logger: Logger, what: string): AppError {
  const appError = AppError.from(error);
  if (!INTERNAL_CODES.has(appError.code)) return appError;
  const ref = randomBytes(6).toString("hex");
  logger.error(what, { ref, code: appError.code, err: error });
  return new AppError(appError.code, `internal error (ref ${ref})`, { cause: error });
}
