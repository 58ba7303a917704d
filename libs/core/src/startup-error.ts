import { getSystemErrorMap } from "node:util";
import { AppError } from "./app-error.js";

/** An operating-system error (EADDRINUSE, EACCES, ECONNREFUSED, ENOENT, …) and what it happened to. */
export interface SystemErrorInfo {
  /** The errno name, e.g. "EADDRINUSE". */
  readonly code: string;
  /** The system call that failed ("listen", "connect", "mkdir", …), when known. */
  readonly syscall: string | undefined;
  /** What it failed on: "host:port", a path, or a host name, when known. */
  readonly target: string | undefined;
  /** The operating system's words for the code, e.g. "address already in use". */
  readonly description: string;
}

/**
 * The innermost system error in `error`'s `cause` chain (following the first of an AggregateError's errors),
 * or undefined when there is none. Some libraries keep only the text of a system error (grpc-js reports a bind
 * failure as "No address added … [listen EADDRINUSE: address already in use 127.0.0.1:50051]"), so a message
 * in Node's system error format counts too.
 */
export function rootSystemError(error: unknown): SystemErrorInfo | undefined {
  return innermostSystemError(causeChain(error))?.system.info;
}

/**
 * Why a process could not start, in one line for a person: the context the errors of the chain add, then the
 * root cause with its code, e.g. "cannot listen on 127.0.0.1:50052: address already in use (EADDRINUSE)" or
 * "cannot connect to NATS at nats://nats:4222: Authorization Violation". Wrappers that say no more than their
 * cause (an `AppError.from` of it: "internal error", "unavailable") are left out.
 */
export function describeStartupError(error: unknown): string {
  const chain = causeChain(error);
  const found = innermostSystemError(chain);
  const root = found?.index ?? chain.length - 1;
  const cause = found === undefined ? rootMessage(chain[root]) : formatSystemError(found.system.info);
  const quoted = found?.system.text ?? "";
  const parts: string[] = [];
  for (const link of chain.slice(0, root)) {
    const message = oneLine(messageOf(link));
    // A message that quotes the system error says less clearly what the cause's line will say.
    if (message === "" || parts.includes(message) || (quoted !== "" && message.includes(quoted))) continue;
    if (isBareWrapper(link)) continue;
    parts.push(message);
  }
  return [...parts, cause].join(": ");
}

interface FoundSystemError {
  readonly info: SystemErrorInfo;
  /** The text it was found as: the error's message, or the part of a message that quotes it. */
  readonly text: string;
}

function innermostSystemError(chain: readonly unknown[]): { index: number; system: FoundSystemError } | undefined {
  for (let index = chain.length - 1; index >= 0; index--) {
    const system = systemErrorOf(chain[index]);
    if (system !== undefined) return { index, system };
  }
  return undefined;
}

const MAX_CHAIN = 16;

/** `error`, its cause, the cause's cause, … (an AggregateError without a cause continues with its first error). */
function causeChain(error: unknown): unknown[] {
  const chain: unknown[] = [];
  let current: unknown = error;
  while (current !== undefined && current !== null && chain.length < MAX_CHAIN && !chain.includes(current)) {
    chain.push(current);
    if (!(current instanceof Error)) break;
    current = current.cause ?? (current instanceof AggregateError ? (current.errors as unknown[])[0] : undefined);
  }
  return chain;
}

/** Node's system error (with `syscall`, `address`, `path` …), or a message that quotes one. */
function systemErrorOf(value: unknown): FoundSystemError | undefined {
  if (!(value instanceof Error)) return undefined;
  const error = value as NodeJS.ErrnoException & { address?: unknown; port?: unknown; hostname?: unknown };
  const description = typeof error.code === "string" ? systemErrorDescription(error.code) : undefined;
  if (typeof error.code === "string" && description !== undefined) {
    const host = typeof error.address === "string" ? error.address : typeof error.hostname === "string" ? error.hostname : undefined;
    const port = typeof error.port === "number" ? error.port : undefined;
    const target = error.path ?? (host !== undefined && port !== undefined ? hostPort(host, port) : host);
    return { info: { code: error.code, syscall: error.syscall, target, description }, text: error.message };
  }
  return parseSystemError(error.message);
}

// Node's formats: "listen EADDRINUSE: address already in use 127.0.0.1:50051", "connect ECONNREFUSED ::1:4222",
// "getaddrinfo ENOTFOUND nats.example", "EACCES: permission denied, mkdir '/srv/work'".
const NET_FORMAT = /\b([a-z][A-Za-z]*) (E[A-Z0-9_]{2,})\b([^\][,;]*)/;
const FS_FORMAT = /\b(E[A-Z0-9_]{2,}): ([^,\]]+), ([a-z][A-Za-z]*) '([^']*)'/;
const HOST_PORT = /^(?:\[[^\]]*\]|\S*):\d+$/;

function parseSystemError(message: string): FoundSystemError | undefined {
  const fs = FS_FORMAT.exec(message);
  const fsDescription = fs === null ? undefined : systemErrorDescription(fs[1]!);
  if (fs !== null && fsDescription !== undefined) {
    return { info: { code: fs[1]!, syscall: fs[3], target: fs[4], description: fsDescription }, text: fs[0] };
  }
  const net = NET_FORMAT.exec(message);
  const netDescription = net === null ? undefined : systemErrorDescription(net[2]!);
  if (net === null || netDescription === undefined) return undefined;
  // After the code: ": <description> <host:port>" or just " <host:port or host name>".
  const rest = net[3]!.trim();
  let target: string | undefined;
  if (rest.startsWith(":")) {
    const last = rest.split(/\s+/).at(-1) ?? "";
    if (HOST_PORT.test(last)) target = last;
  } else if (rest !== "") {
    target = rest.split(/\s+/)[0];
  }
  return { info: { code: net[2]!, syscall: net[1], target, description: netDescription }, text: net[0].trim() };
}

// Codes of Node's DNS errors, which are not errnos (getaddrinfo's EAI_NONAME comes out as ENOTFOUND).
const DNS_ERRORS: Readonly<Record<string, string>> = {
  ENOTFOUND: "host not found",
  ENODATA: "no DNS record",
  ESERVFAIL: "DNS server failure",
  ETIMEOUT: "DNS query timed out",
};

let descriptions: Map<string, string> | undefined;

/** The operating system's description of an errno name ("EACCES" → "permission denied"); undefined for other codes. */
function systemErrorDescription(code: string): string | undefined {
  descriptions ??= new Map([...Object.entries(DNS_ERRORS), ...getSystemErrorMap().values()]);
  return descriptions.get(code);
}

const ACTIONS: Readonly<Record<string, string>> = {
  listen: "cannot listen on",
  bind: "cannot listen on",
  connect: "cannot connect to",
  getaddrinfo: "cannot resolve",
  mkdir: "cannot create directory",
  open: "cannot open",
  scandir: "cannot read directory",
  opendir: "cannot read directory",
  spawn: "cannot run",
};

function formatSystemError(info: SystemErrorInfo): string {
  const reason = `${info.description} (${info.code})`;
  if (info.syscall === undefined) return info.target === undefined ? reason : `${info.target}: ${reason}`;
  const action = ACTIONS[info.syscall] ?? (/^spawn\b/.test(info.syscall) ? ACTIONS["spawn"]! : `cannot ${info.syscall}`);
  return info.target === undefined ? `${action}: ${reason}` : `${action} ${info.target}: ${reason}`;
}

/** The innermost error's message, with its code when it has a string one the message does not already name. */
function rootMessage(value: unknown): string {
  const message = oneLine(messageOf(value));
  const code = value instanceof Error ? (value as { code?: unknown }).code : undefined;
  if (typeof code !== "string" || message.includes(code)) return message === "" ? "unknown error" : message;
  return message === "" ? code : `${message} (${code})`;
}

/** An AppError whose message is what AppError.from would have said of its cause anyway: it adds nothing. */
function isBareWrapper(value: unknown): boolean {
  return value instanceof AppError && value.cause !== undefined && AppError.from(value.cause, value.code).message === value.message;
}

function messageOf(value: unknown): string {
  if (value instanceof Error) return value.message;
  return typeof value === "string" ? value : String(value);
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, " ").trim();
}

function hostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}
