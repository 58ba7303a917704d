import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { AppError, Code, sleep } from "@poseloop/core";

export interface NatsServerOptions {
  /** Port to listen on; default a free one chosen by the server. */
  port?: number;
  /** JetStream store directory; default a new temporary one, removed by dispose(). */
  storeDir?: string;
  /** Path of the nats-server binary; default the one on PATH, else /usr/sbin/nats-server. */
  binary?: string;
  /** How long to wait for the server to listen. Default 15 s. */
  startTimeoutMs?: number;
  /** Extra command-line arguments. */
  args?: readonly string[];
}

/**
 * A real nats-server with JetStream on 127.0.0.1, for integration tests. It can be stopped, killed and
 * restarted on the same port with the same store, to test how clients survive a broker outage.
 */
export class NatsServer {
  readonly binary: string;
  readonly storeDir: string;
  #port: number;
  #child: ChildProcess | undefined;
  #output = "";
  readonly #ownsStore: boolean;
  readonly #startTimeoutMs: number;
  readonly #args: readonly string[];

  private constructor(binary: string, storeDir: string, ownsStore: boolean, options: NatsServerOptions) {
    this.binary = binary;
    this.storeDir = storeDir;
    this.#ownsStore = ownsStore;
    this.#port = options.port ?? -1;
    this.#startTimeoutMs = options.startTimeoutMs ?? 15_000;
    this.#args = options.args ?? [];
  }

  static async start(options: NatsServerOptions = {}): Promise<NatsServer> {
    const binary = options.binary ?? findNatsServerBinary();
    const ownsStore = options.storeDir === undefined;
    const storeDir = options.storeDir ?? (await mkdtemp(join(tmpdir(), "poseloop-nats-")));
    const server = new NatsServer(binary, storeDir, ownsStore, options);
    await server.#launch();
    return server;
  }

  get port(): number {
    return this.#port;
  }

  get url(): string {
    return `nats://127.0.0.1:${this.#port}`;
  }

  get running(): boolean {
    return this.#child !== undefined && this.#child.exitCode === null && this.#child.signalCode === null;
  }

  /** Stops gracefully (SIGTERM), killing after 5 s. */
  async stop(): Promise<void> {
    await this.#terminate("SIGTERM");
  }

  /** Kills abruptly (SIGKILL), like a crashed broker. */
  async kill(): Promise<void> {
    await this.#terminate("SIGKILL");
  }

  /** Starts again on the same port and store. */
  async restart(): Promise<void> {
    if (this.running) await this.stop();
    await this.#launch();
  }

  /** Stops the server and removes the store it created. */
  async dispose(): Promise<void> {
    await this.stop();
    if (this.#ownsStore) await rm(this.storeDir, { recursive: true, force: true });
  }

  async #launch(): Promise<void> {
    const portsDir = await mkdtemp(join(tmpdir(), "poseloop-nats-ports-"));
    const args = ["-a", "127.0.0.1", "-p", String(this.#port), "-js", "-sd", this.storeDir];
    args.push("--ports_file_dir", portsDir, ...this.#args);
    this.#output = "";
    const child = spawn(this.binary, args, { stdio: ["ignore", "pipe", "pipe"] });
    this.#child = child;
    const collect = (chunk: Buffer): void => {
      this.#output = (this.#output + chunk.toString()).slice(-8192);
    };
    child.stdout?.on("data", collect);
    child.stderr?.on("data", collect);
    let spawnError: Error | undefined;
    child.once("error", (error) => {
      spawnError = error;
    });
    try {
      const deadline = Date.now() + this.#startTimeoutMs;
      for (;;) {
        if (spawnError !== undefined) {
          throw new AppError(Code.FAILED_PRECONDITION, `nats-server could not start: ${spawnError.message}`, {
            cause: spawnError,
          });
        }
        if (child.exitCode !== null) {
          throw new AppError(
            Code.FAILED_PRECONDITION,
            `nats-server exited with code ${child.exitCode} at start:\n${this.#output.trim()}`,
          );
        }
        const port = await readPortsFile(portsDir);
        if (port !== undefined) {
          this.#port = port;
          return;
        }
        if (Date.now() > deadline) {
          child.kill("SIGKILL");
          throw new AppError(
            Code.DEADLINE_EXCEEDED,
            `nats-server did not listen within ${this.#startTimeoutMs} ms:\n${this.#output.trim()}`,
          );
        }
        await sleep(25);
      }
    } finally {
      await rm(portsDir, { recursive: true, force: true });
    }
  }

  async #terminate(signal: NodeJS.Signals): Promise<void> {
    const child = this.#child;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill(signal);
    const forced = setTimeout(() => child.kill("SIGKILL"), 5_000);
    await exited;
    clearTimeout(forced);
  }
}

async function readPortsFile(dir: string): Promise<number | undefined> {
  const files = (await readdir(dir)).filter((name) => name.endsWith(".ports"));
  for (const name of files) {
    try {
      const ports = JSON.parse(await readFile(join(dir, name), "utf8")) as { nats?: string[] };
      const url = ports.nats?.[0];
      if (url !== undefined) return Number(new URL(url).port);
    } catch {
      // Written but not complete yet: read again on the next poll.
    }
  }
  return undefined;
}

/** The nats-server binary from PATH or /usr/sbin; a clear error with the install command when absent. */
export function findNatsServerBinary(env: NodeJS.ProcessEnv = process.env): string {
  const candidates = [...(env["PATH"] ?? "").split(delimiter).filter(Boolean), "/usr/sbin", "/usr/local/sbin"];
  for (const dir of candidates) {
    const path = join(dir, "nats-server");
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // Not here; try the next directory.
    }
  }
  throw new AppError(
    Code.FAILED_PRECONDITION,
    "nats-server not found on PATH or in /usr/sbin: install it (apt-get install -y nats-server) to run the integration tests",
  );
}
