import { readFile, stat } from "node:fs/promises";
import { createSecureContext, type SecureContextOptions } from "node:tls";
import { ServerCredentials } from "@grpc/grpc-js";
import { AppError, Code, silentLogger, type Logger } from "@poseloop/core";

/** The PEM files of a TLS server. */
export interface ServerTlsFiles {
  /** The server's certificate chain. */
  readonly certFile: string;
  readonly keyFile: string;
  /** When set: mutual TLS, every client must present a certificate issued by one of these CAs. */
  readonly clientCaFile?: string;
}

/**
 * Server credentials from PEM files that follow the files: when one changes (a renewed certificate, a
 * rotated key) the new ones serve every connection opened after it, with no restart. A change that does not
 * make a valid pair (half-written files, a key that belongs to another certificate) is logged and the
 * previous certificates keep serving, so a rotation in progress never takes a server off the air.
 */
export class ReloadingServerCredentials extends ServerCredentials {
  readonly #files: ServerTlsFiles;
  readonly #logger: Logger;
  #stamp: string;
  #timer: NodeJS.Timeout | undefined;
  #checking = false;

  private constructor(files: ServerTlsFiles, context: SecureContextOptions, stamp: string, logger: Logger, handshakeTimeoutMs: number) {
    const mutual = files.clientCaFile !== undefined;
    // A connection's idle limit only starts once its HTTP/2 session exists, which over TLS is after the
    // handshake: until then a socket that never speaks is bounded by this timeout alone (Node's default 120 s).
    super({ requestCert: mutual, rejectUnauthorized: mutual, minVersion: "TLSv1.2", handshakeTimeout: handshakeTimeoutMs }, context);
    this.#files = files;
    this.#logger = logger;
    this.#stamp = stamp;
  }

  /**
   * Reads and checks the files (INVALID_ARGUMENT naming the file when one is missing or they do not make a
   * valid key pair), then checks them for changes every `reloadIntervalMs` (default 5 s) until close().
   * A client that has not finished its TLS handshake within `handshakeTimeoutMs` (default 10 s) is disconnected.
   */
  static async create(
    files: ServerTlsFiles,
    options: { logger?: Logger; reloadIntervalMs?: number; handshakeTimeoutMs?: number } = {},
  ): Promise<ReloadingServerCredentials> {
    const logger = options.logger ?? silentLogger;
    const stamp = await stampOf(files);
    const context = await loadContext(files);
    const credentials = new ReloadingServerCredentials(files, context, stamp, logger, options.handshakeTimeoutMs ?? 10_000);
    const timer = setInterval(() => void credentials.#reloadIfChanged(), options.reloadIntervalMs ?? 5_000);
    // Watching certificates is no reason to keep a process alive.
    timer.unref();
    credentials.#timer = timer;
    return credentials;
  }

  /** Whether clients must present certificates. */
  get mutual(): boolean {
    return this.#files.clientCaFile !== undefined;
  }

  /** Stops watching the files. */
  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  override _equals(other: ServerCredentials): boolean {
    return other === this;
  }

  async #reloadIfChanged(): Promise<void> {
    if (this.#checking) return;
    this.#checking = true;
    try {
      const stamp = await stampOf(this.#files).catch(() => this.#stamp);
      if (stamp === this.#stamp) return;
      const context = await loadContext(this.#files);
      this.#stamp = stamp;
      this.updateSecureContextOptions(context);
      this.#logger.info("tls certificates reloaded", { cert_file: this.#files.certFile });
    } catch (error) {
      this.#logger.warn("tls certificates changed but cannot be used; the previous ones keep serving", { err: error });
    } finally {
      this.#checking = false;
    }
  }
}

async function stampOf(files: ServerTlsFiles): Promise<string> {
  const paths = [files.certFile, files.keyFile, ...(files.clientCaFile === undefined ? [] : [files.clientCaFile])];
  const stats = await Promise.all(paths.map((path) => stat(path)));
  return stats.map((s) => `${s.ino}:${s.size}:${s.mtimeMs}`).join("|");
}

async function loadContext(files: ServerTlsFiles): Promise<SecureContextOptions> {
  const read = async (path: string, what: string): Promise<Buffer> => {
    try {
      return await readFile(path);
    } catch (error) {
      throw new AppError(Code.INVALID_ARGUMENT, `cannot read the TLS ${what} ${path}`, { cause: error });
    }
  };
  const [cert, key, ca] = await Promise.all([
    read(files.certFile, "certificate"),
    read(files.keyFile, "key"),
    files.clientCaFile === undefined ? undefined : read(files.clientCaFile, "client CA"),
  ]);
  const context: SecureContextOptions = { cert, key, ...(ca === undefined ? {} : { ca }) };
  try {
    // Node checks that the key belongs to the certificate and that the PEM parses only here.
    createSecureContext(context);
  } catch (error) {
    throw new AppError(Code.INVALID_ARGUMENT, `the TLS certificate ${files.certFile} and key ${files.keyFile} do not make a valid pair`, { cause: error });
  }
  return context;
}
