import { randomBytes } from "node:crypto";
import { Metadata, type ServiceError, type StatusObject } from "@grpc/grpc-js";
import { AppError, Code, isCode, type Logger } from "@poseloop/core";

/**
 * Trailer carrying the list of problems of an INVALID_ARGUMENT as a JSON array (binary, so that commas and
 * non-ASCII text inside a problem survive; HTTP/2 would join repeated text values with ", ").
 */
export const PROBLEMS_METADATA_KEY = "poseloop-problems-bin";

/**
 * The most problems, and the longest problem, a status carries. Trailers share HTTP/2's header-list limit
 * (about 64 KiB in Node): past it the client gets no status at all, so a config with thousands of problems
 * would get no answer. The first ones are what a person fixes first anyway.
 */
const MAX_STATUS_PROBLEMS = 100;
const MAX_PROBLEM_CHARS = 400;

/** At most MAX_STATUS_PROBLEMS problems, each shortened, then "and N more" for the rest. */
function capProblems(problems: readonly string[]): string[] {
  const shown = problems.slice(0, MAX_STATUS_PROBLEMS).map((problem) => (problem.length > MAX_PROBLEM_CHARS ? `${problem.slice(0, MAX_PROBLEM_CHARS - 3)}...` : problem));
  const rest = problems.length - shown.length;
  return rest > 0 ? [...shown, `and ${rest} more`] : shown;
}

/** "internal error (ref 3f9a1c2b7d4e)": what a client is told of an internal failure, and the log's key to it. */
const REF_SUFFIX = /\(ref [0-9a-f]{6,32}\)$/;

/**
 * The gRPC status for an error thrown by a handler: AppErrors a client can act on keep their code and message
 * (written for the client); anything else becomes its mapped AppError (ECONNREFUSED → UNAVAILABLE, ...).
 * INTERNAL and UNKNOWN go out as "internal error (ref <id>)" — their text may come from a native library or a
 * bug — and the cause is logged here, once, under the same ref, so the client's report finds the log line.
 */
export function toStatus(error: unknown, logger?: Logger, method?: string): Partial<StatusObject> {
  const appError = AppError.from(error);
  const metadata = new Metadata();
  let details = appError.message;
  if (appError.code === Code.INTERNAL || appError.code === Code.UNKNOWN || appError.code === Code.DATA_LOSS) {
    // A message that already carries a ref was logged where it was made (the inferencer's frame errors).
    if (REF_SUFFIX.test(details)) return { code: appError.code, details, metadata };
    const ref = randomBytes(6).toString("hex");
    logger?.error("request failed", { method, code: appError.code, ref, err: error });
    // DATA_LOSS messages are the services' own ("artifact digest mismatch") and tell a client what to retry.
    details = appError.code === Code.DATA_LOSS ? `${details} (ref ${ref})` : `internal error (ref ${ref})`;
    return { code: appError.code, details, metadata };
  }
  if (appError.problems.length > 0) {
    metadata.set(PROBLEMS_METADATA_KEY, Buffer.from(JSON.stringify(capProblems(appError.problems)), "utf8"));
    // The problems travel once, in their trailer; a message that lists them all (AppError.invalid) keeps
    // only its summary, and fromServiceError puts the list back.
    const joined = `: ${appError.problems.join("; ")}`;
    if (details.endsWith(joined)) details = details.slice(0, -joined.length);
  }
  return { code: appError.code, details, metadata };
}

/** The AppError for a failed client call, with the server's code, message and problem list. */
export function fromServiceError(error: ServiceError | Error): AppError {
  const serviceError = error as Partial<ServiceError>;
  if (typeof serviceError.code === "number" && isCode(serviceError.code)) {
    const problems = parseProblems(serviceError.metadata?.get(PROBLEMS_METADATA_KEY)[0]);
    const details = serviceError.details ?? error.message;
    // toStatus sent AppError.invalid's summary ("invalid X (N problems)") without the list it ended with.
    const message = problems.length > 0 && /\(\d+ problems?\)$/.test(details) ? `${details}: ${problems.join("; ")}` : details;
    return new AppError(serviceError.code, message, { cause: error, problems });
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
