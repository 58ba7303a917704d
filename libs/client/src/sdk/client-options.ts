import { readFileSync } from "node:fs";
import { credentials as grpcCredentials, type ChannelCredentials } from "@grpc/grpc-js";
import { AppError, Code, type Env } from "@poseloop/core";
import type { CallOptions, ClientOptions } from "@poseloop/grpc";

/** Where the trainer listens by default (POSELOOP_TRAINER_LISTEN of services/trainer). */
export const DEFAULT_TRAINER_ADDRESS = "localhost:50052";
/** Where the inferencer listens by default (POSELOOP_INFERENCER_LISTEN of services/inferencer). */
export const DEFAULT_INFERENCER_ADDRESS = "localhost:50051";
/** Deadline of a unary call that sets none of its own. */
export const DEFAULT_CALL_TIMEOUT_MS = 30_000;

/** How to reach one service. */
export interface ConnectionOptions {
  /** "host:port"; default the service's own default address. */
  address?: string;
  /** Sent as `authorization: Bearer <token>` with every call. */
  token?: string;
  /** A file holding the token (its first line), read when the client is made; `token` wins when both are set. */
  tokenFile?: string;
  /**
   * TLS from PEM files, read when the client is made: `caFile` is the CA that signed the service's certificate
   * (default: the system's roots); `certFile` and `keyFile` are this client's, for services that require
   * mutual TLS. Ignored when `credentials` is set.
   */
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
  /** Deadline of unary calls that set no `timeoutMs` of their own; default 30 s. Streams have none. */
  defaultTimeoutMs?: number;
  /** Default plaintext (insecure) HTTP/2. */
  credentials?: ChannelCredentials;
  /** Largest message sent or received; default 16 MiB (the services' default limit). */
  maxMessageBytes?: number;
  /** A CLIENT span per call with its context in the request headers; default true. */
  tracing?: boolean;
}

/** Options of a single call. */
export interface RequestOptions {
  /** Cancels the call. */
  signal?: AbortSignal;
  /** Deadline from now, for this call; overrides the client's default (streams have none unless set). */
  timeoutMs?: number;
  /** Extra request headers. */
  headers?: Readonly<Record<string, string>>;
}

/** A connection with every default applied. */
export interface ResolvedConnection {
  readonly address: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly client: ClientOptions;
}

/**
 * The addresses, token and TLS files from environment variables: POSELOOP_TRAINER_ADDR,
 * POSELOOP_INFERENCER_ADDR, POSELOOP_TOKEN, POSELOOP_TOKEN_FILE, POSELOOP_TLS_CA, POSELOOP_TLS_CLIENT_CERT and
 * POSELOOP_TLS_CLIENT_KEY. Unset or empty variables leave the defaults. The SDK never reads process.env itself:
 * an application passes its environment here, or addresses directly.
 */
export function connectionsFromEnv(env: Env): { trainer: ConnectionOptions; inferencer: ConnectionOptions } {
  const value = (name: string): string | undefined => {
    const raw = env[name]?.trim();
    return raw === undefined || raw === "" ? undefined : raw;
  };
  const token = value("POSELOOP_TOKEN");
  const tokenFile = value("POSELOOP_TOKEN_FILE");
  const caFile = value("POSELOOP_TLS_CA");
  const certFile = value("POSELOOP_TLS_CLIENT_CERT");
  const keyFile = value("POSELOOP_TLS_CLIENT_KEY");
  const tls = {
    ...(caFile === undefined ? {} : { caFile }),
    ...(certFile === undefined ? {} : { certFile }),
    ...(keyFile === undefined ? {} : { keyFile }),
  };
  const withToken = {
    ...(token === undefined ? {} : { token }),
    ...(tokenFile === undefined ? {} : { tokenFile }),
    ...(Object.keys(tls).length === 0 ? {} : { tls }),
  };
  const trainer = value("POSELOOP_TRAINER_ADDR");
  const inferencer = value("POSELOOP_INFERENCER_ADDR");
  return {
    trainer: { ...(trainer === undefined ? {} : { address: trainer }), ...withToken },
    inferencer: { ...(inferencer === undefined ? {} : { address: inferencer }), ...withToken },
  };
}

/**
 * Applies defaults and checks what would otherwise fail obscurely later: an address must be "host:port"
 * (a "grpc://" or "http://" prefix is dropped), a token must fit in one header line.
 */
export function resolveConnection(options: ConnectionOptions, defaultAddress: string): ResolvedConnection {
  const problems: string[] = [];
  const address = normalizeAddress(options.address ?? defaultAddress);
  if (!/^(\[[0-9a-fA-F:.]+\]|[^\s:/[\]]+):\d{1,5}$/.test(address)) problems.push(`address "${address}" is not host:port`);
  const headers: Record<string, string> = {};
  const given = options.token ?? (options.tokenFile === undefined ? undefined : readSecretFile(options.tokenFile, "token file", problems));
  if (given !== undefined) {
    const token = given.trim();
    if (token === "" || /[^\x21-\x7e]/.test(token)) problems.push("the token must be one word of visible characters");
    else headers["authorization"] = `Bearer ${token}`;
  }
  const tls = options.credentials === undefined && options.tls !== undefined ? tlsCredentials(options.tls, problems) : undefined;
  const timeout = options.defaultTimeoutMs;
  if (timeout !== undefined && !(Number.isFinite(timeout) && timeout > 0)) problems.push(`defaultTimeoutMs must be a positive number, got ${timeout}`);
  if (problems.length > 0) throw AppError.invalid("client options", problems);
  const maxBytes = options.maxMessageBytes ?? 16 * 1024 * 1024;
  return {
    address,
    headers,
    client: {
      defaultTimeoutMs: timeout ?? DEFAULT_CALL_TIMEOUT_MS,
      maxReceiveMessageBytes: maxBytes,
      maxSendMessageBytes: maxBytes,
      ...(options.credentials === undefined ? {} : { credentials: options.credentials }),
      ...(tls === undefined ? {} : { credentials: tls }),
      ...(options.tracing === undefined ? {} : { tracing: options.tracing }),
    },
  };
}

/** The first line of a file holding a secret; a problem (naming the file, never its content) when unreadable. */
function readSecretFile(path: string, what: string, problems: string[]): string | undefined {
  try {
    return readFileSync(path, "utf8").split("\n")[0] ?? "";
  } catch (error) {
    problems.push(`cannot read the ${what} ${path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
    return undefined;
  }
}

function tlsCredentials(tls: NonNullable<ConnectionOptions["tls"]>, problems: string[]): ChannelCredentials | undefined {
  if ((tls.certFile === undefined) !== (tls.keyFile === undefined)) {
    problems.push("a client certificate and its key go together: give both or neither");
    return undefined;
  }
  const read = (path: string | undefined, what: string): Buffer | null => {
    if (path === undefined) return null;
    try {
      return readFileSync(path);
    } catch (error) {
      problems.push(`cannot read the ${what} ${path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
      return null;
    }
  };
  const ca = read(tls.caFile, "TLS CA file");
  const key = read(tls.keyFile, "TLS client key");
  const cert = read(tls.certFile, "TLS client certificate");
  try {
    return grpcCredentials.createSsl(ca, key, cert);
  } catch (error) {
    problems.push(`the TLS files cannot be used: ${(error as Error).message}`);
    return undefined;
  }
}

function normalizeAddress(address: string): string {
  return address.trim().replace(/^(grpc|http|dns):\/\/\/?/, "").replace(/\/+$/, "");
}

/** The grpc call options of a request: the connection's headers (the token) under the call's own. */
export function toCallOptions(connection: ResolvedConnection, options: RequestOptions = {}): CallOptions {
  return {
    headers: { ...connection.headers, ...options.headers },
    ...(options.signal === undefined ? {} : { signal: options.signal }),
    ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
  };
}

/**
 * Names the service in errors a user must act on (an address that does not answer, a deadline), so that
 * "connection refused" says which of the two services it was.
 */
export function inService(error: unknown, service: string, address: string): AppError {
  const appError = AppError.from(error);
  if (appError.message.startsWith(`the ${service} at `)) return appError;
  if (appError.code === Code.UNAVAILABLE) {
    return new AppError(Code.UNAVAILABLE, `the ${service} at ${address} is unavailable: ${connectionFailure(appError.message)}`, {
      cause: appError,
      problems: appError.problems,
    });
  }
  if (appError.code === Code.DEADLINE_EXCEEDED) {
    return new AppError(Code.DEADLINE_EXCEEDED, `the ${service} at ${address} did not answer in time: ${appError.message}`, {
      cause: appError,
      problems: appError.problems,
    });
  }
  return appError;
}

/**
 * grpc-js words a failed connection as "No connection established. Last error: Error: connect ECONNREFUSED
 * 127.0.0.1:50052. Resolution note: "; the part after "Last error" is what a user needs.
 */
export function connectionFailure(message: string): string {
  const last = /Last error: (?:Error: )?(.*?)\.?\s*(?:Resolution note:.*)?$/s.exec(message);
  const reason = last?.[1]?.trim();
  return reason === undefined || reason === "" ? message.replace(/\s*Resolution note:\s*$/, "") : reason;
}
