import { readFile, stat } from "node:fs/promises";
import { AppError, Code, type EnvReader, type LogFields, type Logger } from "@poseloop/core";
import { AccessControl, parseRoleTokens, type MethodAccessMap, type RoleToken } from "./access-control.js";
import { CONNECTION_DEFAULTS, GrpcServer, type ListenAddress } from "./server.js";
import { ReloadingServerCredentials, type ServerTlsFiles } from "./server-tls.js";

export interface GrpcServerSettings {
  readonly host: string;
  readonly port: number;
  readonly maxMessageBytes: number;
  readonly drainTimeoutMs: number;
  /** Keepalive ping interval, connection age and idle limits (0: none); see GrpcServerOptions. */
  readonly keepaliveTimeMs: number;
  readonly maxConnectionAgeMs: number;
  readonly maxConnectionIdleMs: number;
  /** Bearer tokens accepted, each with its role. No tokens and no token files: calls are not checked. */
  readonly tokens: readonly RoleToken[];
  /** Files of "role:token" lines (never logged), read at start and again when they change. */
  readonly tokenFiles: readonly string[];
  /** The role each method of the service needs (methods not named need admin). */
  readonly methodAccess: MethodAccessMap;
  /** TLS, and mutual TLS when a client CA is set. Undefined: plaintext. */
  readonly tls: ServerTlsFiles | undefined;
  /** POSELOOP_INSECURE=1: serve other hosts with neither tokens nor TLS. */
  readonly insecure: boolean;
  /** The variable that names the tokens, for messages (e.g. POSELOOP_TRAINER_TOKENS). */
  readonly tokensVariable: string;
}

/** What a service adds to its gRPC settings: the role of each method, and tokens from its older variables. */
export interface ServiceAccess {
  readonly methods: MethodAccessMap;
  /** Tokens read from variables that predate <PREFIX>_TOKENS (the trainer's POSELOOP_TRAINER_TOKEN). */
  readonly extraTokens?: readonly RoleToken[];
}

/**
 * The gRPC settings of a service: <PREFIX>_LISTEN ("host:port"), POSELOOP_GRPC_MAX_MESSAGE_BYTES,
 * POSELOOP_DRAIN_TIMEOUT (how long a stopping server lets open calls finish), POSELOOP_GRPC_KEEPALIVE (ping
 * interval), POSELOOP_GRPC_MAX_CONNECTION_AGE, POSELOOP_GRPC_MAX_CONNECTION_IDLE (0: no limit), <PREFIX>_TOKENS
 * ("role:token,role:token"), <PREFIX>_TOKENS_FILE, POSELOOP_TLS_CERT, POSELOOP_TLS_KEY,
 * POSELOOP_TLS_CLIENT_CA and POSELOOP_INSECURE.
 *
 * Secure by default: without <PREFIX>_LISTEN the service binds 127.0.0.1 on `defaultPort`, protected or not
 * (a deployment names the address it serves on); an address other hosts can reach needs tokens or TLS, or
 * POSELOOP_INSECURE=1.
 */
export function grpcServerSettingsFromEnv(env: EnvReader, prefix: string, defaultPort: number, access: ServiceAccess = { methods: {} }): GrpcServerSettings {
  const listenVariable = `${prefix}_LISTEN`;
  const problemsBefore = env.problems.length;
  const listen = env.listenAddress(listenVariable, { default: `127.0.0.1:${defaultPort}` });
  // An address that does not parse is reported once, as such, not again as one other hosts could reach.
  const listenParsed = env.problems.length === problemsBefore;
  const { host, port } = listen;
  const tokensVariable = `${prefix}_TOKENS`;
  const parsed = parseRoleTokens(env.string(tokensVariable, { default: "" }), tokensVariable);
  for (const problem of parsed.problems) env.problem(problem);
  const tokens = [...parsed.tokens, ...(access.extraTokens ?? []).filter((t) => t.token !== "")];
  const tokenFiles = env.list(`${prefix}_TOKENS_FILE`, { default: [] });
  const certFile = env.string("POSELOOP_TLS_CERT", { default: "" });
  const keyFile = env.string("POSELOOP_TLS_KEY", { default: "" });
  const clientCaFile = env.string("POSELOOP_TLS_CLIENT_CA", { default: "" });
  if ((certFile === "") !== (keyFile === "")) env.problem("POSELOOP_TLS_CERT and POSELOOP_TLS_KEY go together: set both or neither");
  if (clientCaFile !== "" && certFile === "") env.problem("POSELOOP_TLS_CLIENT_CA (mutual TLS) needs POSELOOP_TLS_CERT and POSELOOP_TLS_KEY");
  const tls: ServerTlsFiles | undefined =
    certFile === "" || keyFile === "" ? undefined : { certFile, keyFile, ...(clientCaFile === "" ? {} : { clientCaFile }) };
  const insecure = env.bool("POSELOOP_INSECURE", { default: false });
  const protectedSomehow = tokens.length > 0 || tokenFiles.length > 0 || tls !== undefined;
  if (!protectedSomehow && !insecure && !isLoopback(host) && listenParsed) {
    env.problem(
      `${listenVariable}=${host}:${port} lets other hosts call this service, which needs ${tokensVariable} (or ${prefix}_TOKENS_FILE) ` +
        "or POSELOOP_TLS_CERT and POSELOOP_TLS_KEY; POSELOOP_INSECURE=1 serves them with neither",
    );
  }
  return {
    host,
    port,
    maxMessageBytes: env.int("POSELOOP_GRPC_MAX_MESSAGE_BYTES", { default: 16 * 1024 * 1024, min: 1024, max: 1024 * 1024 * 1024 }),
    drainTimeoutMs: env.durationMs("POSELOOP_DRAIN_TIMEOUT", { default: 10_000, min: 0, max: 600_000 }),
    // Pings closer than 10 s apart are what grpc-js clients are told not to send; 0 turns keepalive off.
    keepaliveTimeMs: durationOrOff(env, "POSELOOP_GRPC_KEEPALIVE", CONNECTION_DEFAULTS.keepaliveTimeMs, 10_000),
    maxConnectionAgeMs: durationOrOff(env, "POSELOOP_GRPC_MAX_CONNECTION_AGE", CONNECTION_DEFAULTS.maxConnectionAgeMs, 60_000),
    maxConnectionIdleMs: durationOrOff(env, "POSELOOP_GRPC_MAX_CONNECTION_IDLE", CONNECTION_DEFAULTS.maxConnectionIdleMs, 1_000),
    tokens,
    tokenFiles,
    methodAccess: access.methods,
    tls,
    insecure,
    tokensVariable,
  };
}

/** A duration of at least `min`, or 0 (off). */
function durationOrOff(env: EnvReader, name: string, fallback: number, min: number): number {
  const value = env.durationMs(name, { default: fallback, min: 0, max: 7 * 24 * 3_600_000 });
  if (value !== 0 && value < min) env.problem(`${name} must be 0 (off) or at least ${min} ms`);
  return value;
}

/** Whether only this machine can reach `host`. */
export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/**
 * Re-reads the token files when one changes, so a token can be added or withdrawn without a restart; a
 * change that does not parse is logged and the tokens in force stay. Returns how to stop watching.
 */
function watchTokenFiles(settings: GrpcServerSettings, access: AccessControl, logger: Logger, intervalMs: number): () => void {
  if (settings.tokenFiles.length === 0) return () => undefined;
  const stampOf = async (): Promise<string> =>
    (await Promise.all(settings.tokenFiles.map(async (file) => stat(file).then((s) => `${s.ino}:${s.size}:${s.mtimeMs}`, () => "missing")))).join("|");
  let stamp: Promise<string> = stampOf();
  let checking = false;
  const timer = setInterval(() => {
    if (checking) return;
    checking = true;
    void (async () => {
      const [before, now] = await Promise.all([stamp, stampOf()]);
      if (before === now) return;
      stamp = Promise.resolve(now);
      try {
        access.replaceTokens(await loadTokens(settings));
        logger.info("token files reloaded", { files: settings.tokenFiles });
      } catch (error) {
        logger.warn("token files changed but cannot be used; the tokens in force stay", { err: error });
      }
    })().finally(() => {
      checking = false;
    });
  }, intervalMs);
  // Watching token files is no reason to keep a process alive.
  timer.unref();
  return () => clearInterval(timer);
}

/** The tokens of the settings and of their token files. */
async function loadTokens(settings: GrpcServerSettings): Promise<RoleToken[]> {
  const tokens = [...settings.tokens];
  const problems: string[] = [];
  for (const file of settings.tokenFiles) {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (error) {
      throw new AppError(Code.INVALID_ARGUMENT, `cannot read the token file ${file}`, { cause: error });
    }
    const parsed = parseRoleTokens(text, file);
    problems.push(...parsed.problems);
    if (parsed.tokens.length === 0 && parsed.problems.length === 0) problems.push(`${file} holds no tokens`);
    tokens.push(...parsed.tokens);
  }
  if (problems.length > 0) throw AppError.invalid("token files", problems);
  return tokens;
}

/** A listening server built from settings, and how to stop it. */
export interface RunningServer<T = void> {
  readonly server: GrpcServer;
  readonly address: ListenAddress;
  /** What `register` returned (the services it built, for the caller to start and stop). */
  readonly registered: T;
  /** Drains open calls for up to the configured timeout, then cancels what is left. */
  stop(): Promise<void>;
}

/**
 * Builds a GrpcServer from a service's settings, lets `register` add its services, listens, and logs a
 * "listening" line with the address (service launchers and tests wait for that line).
 */
export async function startGrpcServer<T = void>(
  settings: GrpcServerSettings,
  options: {
    logger: Logger;
    service: string;
    initialHealth?: "SERVING" | "NOT_SERVING";
    register?: (server: GrpcServer) => T;
    fields?: LogFields;
    /** How often token files are checked for changes. Default 5 s. */
    tokenReloadIntervalMs?: number;
  },
): Promise<RunningServer<T>> {
  const { logger } = options;
  const tokens = await loadTokens(settings);
  const credentials = settings.tls === undefined ? undefined : await ReloadingServerCredentials.create(settings.tls, { logger });
  const access = new AccessControl(tokens, settings.methodAccess);
  const stopWatchingTokens = watchTokenFiles(settings, access, logger, options.tokenReloadIntervalMs ?? 5_000);
  const server = new GrpcServer({
    logger,
    maxReceiveMessageBytes: settings.maxMessageBytes,
    maxSendMessageBytes: settings.maxMessageBytes,
    keepaliveTimeMs: settings.keepaliveTimeMs,
    maxConnectionAgeMs: settings.maxConnectionAgeMs,
    maxConnectionIdleMs: settings.maxConnectionIdleMs,
    ...(options.initialHealth === undefined ? {} : { initialHealth: options.initialHealth }),
    ...(access.enabled ? { access } : {}),
    ...(credentials === undefined ? {} : { credentials }),
  });
  let address: ListenAddress;
  let registered: T;
  try {
    registered = options.register?.(server) as T;
    address = await server.listen(settings.host, settings.port);
  } catch (error) {
    credentials?.close();
    stopWatchingTokens();
    throw error;
  }
  const where = `${address.host}:${address.port}`;
  const security = { tls: credentials === undefined ? "off" : credentials.mutual ? "mutual" : "on", tokens: tokens.length };
  logger.info("listening", { service: options.service, address: where, ...security, ...options.fields });
  if (!access.enabled && credentials === undefined) {
    if (isLoopback(address.host)) {
      logger.info(`no tokens and no TLS configured: serving this machine only (${address.host}); set ${settings.tokensVariable} or POSELOOP_TLS_CERT/POSELOOP_TLS_KEY to serve other hosts`);
    } else {
      logger.warn(`POSELOOP_INSECURE: serving ${where} with neither tokens nor TLS: anyone who reaches this port can call every method`, { address: where });
    }
  } else if (access.enabled && credentials === undefined && !isLoopback(address.host)) {
    logger.warn(`serving ${where} without TLS: bearer tokens travel in clear text; set POSELOOP_TLS_CERT and POSELOOP_TLS_KEY`, { address: where });
  }
  return {
    server,
    address,
    registered,
    stop: async () => {
      const { forced } = await server.drain(settings.drainTimeoutMs);
      credentials?.close();
      stopWatchingTokens();
      if (forced) logger.warn("calls still open at the drain timeout were cancelled", { timeout_ms: settings.drainTimeoutMs });
    },
  };
}
