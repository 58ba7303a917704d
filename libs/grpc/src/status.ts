import { Metadata, type ServiceError, type StatusObject } from "@grpc/grpc-js";
import { AppError, Code, isCode, type Logger } from "@poseloop/core";

/**
 * Trailer carrying the list of problems of an INVALID_ARGUMENT as a JSON array (binary, so that commas and
 * non-ASCII text inside a problem survive; HTTP/2 would join repeated text values with ", ").
 */
export const PROBLEMS_METADATA_KEY = "poseloop-problems-bin";

/**
 * The gRPC status for an error thrown by a handler: AppErrors keep their code and message (written for the
 * client); anything else becomes its mapped AppError (ECONNREFUSED → UNAVAILABLE, ...) or INTERNAL with a
 * generic message. Errors a client cannot fix are logged here, once, with their cause.
 */
export function toStatus(error: unknown, logger?: Logger, method?: string): Partial<StatusObject> {
  const appError = AppError.from(error);
  const metadata = new Metadata();
  if (appError.problems.length > 0) {
    metadata.set(PROBLEMS_METADATA_KEY, Buffer.from(JSON.stringify(appError.problems), "utf8"));
  }
  if (appError.code === Code.INTERNAL || appError.code === Code.UNKNOWN || appError.code === Code.DATA_LOSS) {
    logger?.error("request failed", { method, code: appError.code, err: error });
  }
  return { code: appError.code, details: appError.message, metadata };
}

/** The AppError for a failed client call, with the server's code, message and problem list. */
export function fromServiceError(error: ServiceError | Error): AppError {
  const serviceError = error as Partial<ServiceError>;
  if (typeof serviceError.code === "number" && isCode(serviceError.code)) {
    const problems = parseProblems(serviceError.metadata?.get(PROBLEMS_METADATA_KEY)[0]);
    return new AppError(serviceError.code, serviceError.details ?? error.message, { cause: error, problems });
  }
  return AppError.from(error);
}

function parseProblems(value: string | Buffer | undefined): string[] {
  if (value === undefined) return [];
  try {
    const parsed: unknown = JSON.parse(value.toString());
    return Array.isArray(parsed) ? parsed.map(String) : [];
  } catch {
    return [];
  }
}
