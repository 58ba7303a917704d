import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { connect } from "@nats-io/transport-node";
import {
  AuthorizationError,
  credsAuthenticator,
  nkeyAuthenticator,
  tokenAuthenticator,
  usernamePasswordAuthenticator,
  type Authenticator,
  type ConnectionOptions,
  type NatsConnection,
} from "@nats-io/nats-core";
import { AppError, Code, silentLogger, type Logger } from "@poseloop/core";
import { redactNatsUrl } from "./url-secrets.js";

/**
 * How a client proves who it is to NATS and checks the server, all optional. Secrets come from files (mounted
 * Kubernetes secrets), never from the command line or a URL that ends up in a log.
 */
export interface NatsSecurityOptions {
  /** A NATS credentials file (JWT + nkey seed, from `nsc`); read again at each reconnect, so it can rotate. */
  credsFile?: string;
  /** A file holding an nkey seed ("SU..."). */
  nkeySeedFile?: string;
  /** User name, with its password from `passwordFile`. */
  user?: string;
  passwordFile?: string;
  /** A file holding the server's auth token. */
  tokenFile?: string;
  /** TLS: the CA that signed the server's certificate; the client's certificate and key for mutual TLS. */
  tlsCaFile?: string;
  tlsCertFile?: string;
  tlsKeyFile?: string;
}

export interface NatsConnectOptions {
  /** One or more server URLs (nats://host:4222). */
  servers: string | readonly string[];
  /** Client name shown by the server (e.g. "trainer-<host>"). */
  name?: string;
  logger?: Logger;
  /** Delay between reconnect attempts. Default 500 ms (with jitter). */
  reconnectTimeWaitMs?: number;
  /** Client pings; a server that misses 2 is considered gone. Default 10 s. */
  pingIntervalMs?: number;
  /** How long the first connection may take per attempt. Default 10 s. */
  timeoutMs?: number;
  /**
   * Request timeout of JetStream API calls (KV reads and writes, consumer and object-store requests). Default
   * 10 s: nats.js's own 5 s is short for a busy server writing file storage on a loaded machine.
   */
  apiTimeoutMs?: number;
  /** Credentials and TLS. A user:password or token in a server URL works too, and is never logged. */
  security?: NatsSecurityOptions;
}

/** JetStream API request timeout unless NatsConnectOptions.apiTimeoutMs sets one. */
export const DEFAULT_API_TIMEOUT_MS = 10_000;

/**
 * Connects to NATS for a service's lifetime: waits for the first connection if the server is not up yet,
 * reconnects forever after losing it, and logs every status change (disconnect, reconnect, errors).
 */
export async function connectNats(options: NatsConnectOptions): Promise<NatsConnection> {
  const logger = options.logger ?? silentLogger;
  const { servers, auth: urlAuth } = splitUrlCredentials(typeof options.servers === "string" ? [options.servers] : [...options.servers]);
  const security = await securityOptions(options.security ?? {});
  let connection: NatsConnection;
  try {
    connection = await connect({
      servers,
      ...urlAuth,
      ...security,
      ...(options.name === undefined ? {} : { name: options.name }),
      maxReconnectAttempts: -1,
      waitOnFirstConnect: true,
      reconnectTimeWait: options.reconnectTimeWaitMs ?? 500,
      pingInterval: options.pingIntervalMs ?? 10_000,
      timeout: options.timeoutMs ?? 10_000,
    });
  } catch (error) {
    if (isAuthorizationError(error)) {
      throw new AppError(
        Code.UNAUTHENTICATED,
        `NATS at ${servers.join(", ")} refused this client's credentials (${describeCredentials(urlAuth, options.security ?? {})})`,
        { cause: error },
      );
    }
    throw new AppError(Code.UNAVAILABLE, `cannot connect to NATS at ${servers.map(redactNatsUrl).join(", ")}`, { cause: error });
  }
  logger.info("nats connected", { server: connection.getServer() });
  void (async () => {
    for await (const status of connection.status()) {
      switch (status.type) {
        case "disconnect":
        case "reconnecting":
        case "staleConnection":
          logger.warn(`nats ${status.type}`, { status });
          break;
        case "reconnect":
          logger.info("nats reconnected", { server: connection.getServer() });
          break;
        case "error":
        case "ldm":
        case "slowConsumer":
          logger.warn(`nats ${status.type}`, { status });
          break;
        default:
          logger.debug(`nats ${status.type}`, { status });
      }
    }
  })().catch((error: unknown) => logger.warn("nats status monitor ended", { err: error }));
  return connection;
}

type UrlAuth = Pick<ConnectionOptions, "user" | "pass" | "token">;

/**
 * The servers without the user part of their URLs, and the credentials it held: nats.js ignores a URL's user
 * part, so "nats://app:secret@nats:4222" would otherwise connect anonymously (and print the secret in logs).
 */
function splitUrlCredentials(servers: readonly string[]): { servers: string[]; auth: UrlAuth } {
  let auth: UrlAuth = {};
  const plain = servers.map((server) => {
    const match = /^([a-z]+:\/\/)([^@/\s]*)@(.*)$/i.exec(server);
    if (match === null) return server;
    const [, scheme = "", userInfo = "", rest = ""] = match;
    if (Object.keys(auth).length === 0 && userInfo !== "") {
      const colon = userInfo.indexOf(":");
      auth = colon < 0
        ? { token: decode(userInfo) }
        : { user: decode(userInfo.slice(0, colon)), pass: decode(userInfo.slice(colon + 1)) };
    }
    return `${scheme}${rest}`;
  });
  return { servers: plain, auth };
}

function decode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

async function securityOptions(security: NatsSecurityOptions): Promise<Partial<ConnectionOptions>> {
  const read = async (path: string, what: string): Promise<string> => {
    try {
      return (await readFile(path, "utf8")).trim();
    } catch (error) {
      throw new AppError(Code.INVALID_ARGUMENT, `cannot read the NATS ${what} ${path}`, { cause: error });
    }
  };
  const out: Partial<ConnectionOptions> = {};
  // Secrets in files are read again at every (re)connect, so a rotated file (a renewed Kubernetes Secret) is
  // picked up without a restart; a file that cannot be read then keeps the last value that could.
  const following = async (path: string, what: string): Promise<() => string> => {
    let last = await read(path, what);
    return () => {
      try {
        last = readFileSync(path, "utf8").trim();
      } catch {
        // Mid-rotation (the file briefly missing): the previous secret is the best guess.
      }
      return last;
    };
  };
  const authenticators: Authenticator[] = [];
  if (security.credsFile !== undefined) {
    const credsFile = security.credsFile;
    await read(credsFile, "credentials file");
    authenticators.push(credsAuthenticator(() => readFileSync(credsFile)));
  } else if (security.nkeySeedFile !== undefined) {
    const seed = await following(security.nkeySeedFile, "nkey seed file");
    authenticators.push(nkeyAuthenticator(() => new TextEncoder().encode(seed())));
  }
  if (security.user !== undefined) {
    if (security.passwordFile !== undefined) {
      authenticators.push(usernamePasswordAuthenticator(security.user, await following(security.passwordFile, "password file")));
    } else {
      out.user = security.user;
    }
  }
  if (security.tokenFile !== undefined) authenticators.push(tokenAuthenticator(await following(security.tokenFile, "token file")));
  if (authenticators.length > 0) out.authenticator = authenticators;
  if (security.tlsCaFile !== undefined || security.tlsCertFile !== undefined) {
    out.tls = {
      ...(security.tlsCaFile === undefined ? {} : { caFile: security.tlsCaFile }),
      ...(security.tlsCertFile === undefined ? {} : { certFile: security.tlsCertFile }),
      ...(security.tlsKeyFile === undefined ? {} : { keyFile: security.tlsKeyFile }),
    };
  }
  return out;
}

function isAuthorizationError(error: unknown): boolean {
  for (let cause: unknown = error; cause instanceof Error; cause = cause.cause) {
    if (cause instanceof AuthorizationError || /authoriz/i.test(cause.message)) return true;
  }
  return false;
}

/** Which kind of credentials were sent, never their values. */
function describeCredentials(urlAuth: UrlAuth, security: NatsSecurityOptions): string {
  if (security.credsFile !== undefined) return `credentials file ${security.credsFile}`;
  if (security.nkeySeedFile !== undefined) return `nkey seed file ${security.nkeySeedFile}`;
  if (security.user !== undefined || urlAuth.user !== undefined) return `user ${security.user ?? urlAuth.user ?? ""}`;
  if (security.tokenFile !== undefined || urlAuth.token !== undefined) return "a token";
  return "none were configured";
}
