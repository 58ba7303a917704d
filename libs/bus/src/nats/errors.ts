import { JetStreamApiCodes, JetStreamApiError, JetStreamError } from "@nats-io/jetstream";
import {
  ClosedConnectionError,
  ConnectionError,
  DrainingConnectionError,
  NoRespondersError,
  PermissionViolationError,
  RequestError,
  TimeoutError,
} from "@nats-io/nats-core";
import { AppError, Code } from "@poseloop/core";

/** Errors that say the server or the connection is not there right now: worth retrying. */
const UNAVAILABLE_ERRORS = [TimeoutError, NoRespondersError, RequestError, ClosedConnectionError, DrainingConnectionError, ConnectionError];

/**
 * Maps a nats.js error to an AppError, by its class and JetStream code; every NATS call of this package goes
 * through here. A timeout, a failed request or a lost connection is UNAVAILABLE (worth retrying), a KV write
 * at a wrong last sequence ABORTED (a stale compare-and-set), a JetStream 404 NOT_FOUND, a subject the
 * NATS user may not use PERMISSION_DENIED (a deployment's permissions, not an outage: retrying cannot help),
 * anything else INTERNAL. "JetStream not enabled" stays INTERNAL: nats.js reports it for a server without JetStream and for
 * one still starting alike.
 */
export function fromNatsError(error: unknown, what: string): AppError {
  if (error instanceof AppError) return error;
  const code = natsErrorCode(error);
  const message =
    code === Code.ABORTED ? `${what}: the value changed since it was read (stale revision)`
    : code === Code.UNAVAILABLE ? `${what}: NATS is unavailable`
    : code === Code.NOT_FOUND ? `${what}: not found`
    : code === Code.DATA_LOSS ? `${what}: the object is corrupt, its bytes do not match the stored digest`
    : code === Code.PERMISSION_DENIED ? `${what}: the NATS user may not ${permissionDenied(error)}`
    : `${what} failed`;
  return new AppError(code, message, { cause: error });
}

function natsErrorCode(error: unknown): Code {
  if (permissionViolation(error) !== undefined) return Code.PERMISSION_DENIED;
  if (error instanceof JetStreamApiError) {
    if (error.code === JetStreamApiCodes.StreamWrongLastSequence || error.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown) return Code.ABORTED;
    if (error.status === 404) return Code.NOT_FOUND;
    if (error.status === 503) return Code.UNAVAILABLE;
    return Code.INTERNAL;
  }
  if (error instanceof JetStreamError) {
    // A pull consumer's status (JetStreamStatusError, which the package's main entry does not export).
    const status = (error as { code?: unknown }).code;
    return status === 408 || status === 503 ? Code.UNAVAILABLE : Code.INTERNAL;
  }
  if (UNAVAILABLE_ERRORS.some((type) => error instanceof type)) return Code.UNAVAILABLE;
  if (error instanceof Error && error.constructor === Error) {
    // @nats-io/obj throws plain Errors; these are the two of its messages a caller acts on.
    if (error.message.startsWith("received a corrupt object, digests do not match")) return Code.DATA_LOSS;
    if (error.message === "object store not found" || error.message === "object not found") return Code.NOT_FOUND;
  }
  return Code.INTERNAL;
}

/** The permission violation behind `error`: the error itself or, for a request, its cause. */
function permissionViolation(error: unknown): PermissionViolationError | undefined {
  if (error instanceof PermissionViolationError) return error;
  if (error instanceof Error && error.cause instanceof PermissionViolationError) return error.cause;
  return undefined;
}

function permissionDenied(error: unknown): string {
  const violation = permissionViolation(error);
  return violation === undefined ? "do this" : `${violation.operation === "subscription" ? "subscribe to" : "publish to"} ${violation.subject}`;
}
