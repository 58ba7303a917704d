import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import type { Readable } from "node:stream";
import { AppError, Code } from "@poseloop/core";
import { encodeMessage, FrameDecoder, protocolError, type EngineFrame, type EngineMessage, type OutgoingTensor } from "./engine-protocol.js";

export interface EngineProcessOptions {
  readonly command: string;
  readonly args: readonly string[];
  readonly env: Readonly<Record<string, string | undefined>>;
  /** No answer within this: the engine is hung, killed, and every request fails. */
  readonly progressTimeoutMs: number;
  /**
   * The same for the start: the hello (importing torch) and `init` (building the model, a CUDA context, a
   * torchrun rendezvous) take far longer than a step. Default: the larger of progressTimeoutMs and 2 minutes.
   */
  readonly startTimeoutMs?: number;
  /** Each line the engine writes on stderr (Python warnings, tracebacks, torchrun's own messages). */
  readonly onStderr?: (line: string) => void;
}

/** The engine's stderr lines kept for the log that goes with a failure. */
const STDERR_TAIL_LINES = 20;
/** A failure message quotes at most this much of the engine's last stderr line. */
const LAST_LINE_CHARS = 300;
/** Longer stderr lines (a progress bar redrawn with \r for minutes) are cut, so neither the log nor the tail grows without bound. */
const STDERR_LINE_CHARS = 4_000;

const ENGINE_CODES: Readonly<Record<string, Code>> = {
  INVALID_ARGUMENT: Code.INVALID_ARGUMENT,
  FAILED_PRECONDITION: Code.FAILED_PRECONDITION,
  OUT_OF_MEMORY: Code.RESOURCE_EXHAUSTED,
  INTERNAL: Code.INTERNAL,
};

interface Pending {
  /** undefined for the hello the engine writes unasked. */
  readonly id: number | undefined;
  readonly request: string;
  readonly answer: string;
  resolve(frame: EngineFrame): void;
  reject(error: AppError): void;
}

/**
 * One engine process and the conversation with it: requests answered in order, one deadline for whichever
 * answer is awaited, and every way the process can fail (cannot start, exits, is killed, writes something
 * that is not the protocol, stops answering) turned into one AppError that rejects every pending and later
 * request. Nothing here throws outside a returned promise: a dying engine never crashes the trainer.
 */
export class EngineProcess {
  readonly #options: EngineProcessOptions;
  readonly #child: ChildProcessWithoutNullStreams;
  readonly #exited: Promise<void>;
  readonly #stderrTail: string[] = [];
  #queue: Pending[] = [];
  #nextId = 1;
  #timer: NodeJS.Timeout | undefined;
  /** Why the engine can no longer answer anything; set once. */
  #failure: AppError | undefined;
  /** An OUT_OF_MEMORY or INTERNAL answer: only the state may still be read, then the engine is stopped. */
  #stopped: AppError | undefined;
  /** A message cut short by the end of stdout; reported only if the engine exited cleanly. */
  #truncated: AppError | undefined;
  #closing = false;
  #closed: Promise<void> | undefined;
  #hasExited = false;

  private constructor(options: EngineProcessOptions) {
    this.#options = options;
    this.#child = spawn(options.command, options.args, {
      stdio: ["pipe", "pipe", "pipe"],
      env: options.env,
      // Its own process group, so a kill reaches torchrun's workers too, not only torchrun. Should the
      // trainer itself die, the engine still goes: it exits at the end of its stdin.
      detached: true,
    });
    const hello = new Promise<EngineFrame>((resolve, reject) => this.#queue.push({ id: undefined, request: "hello", answer: "hello", resolve, reject }));
    this.hello = hello;
    // The hello's rejection is the caller's to handle; this only keeps an unawaited one from being "unhandled".
    hello.catch(() => undefined);
    this.#armTimer();
    let spawnFailed: (() => void) | undefined;
    this.#child.on("error", (error: NodeJS.ErrnoException) => {
      this.#fail(spawnError(options.command, error));
      // A process that never started has nothing to wait for.
      if (this.#child.pid === undefined) spawnFailed?.();
    });
    // A write into a dead engine fails with EPIPE; its exit says why, so the write error itself is dropped.
    this.#child.stdin.on("error", () => undefined);
    this.#readStderr(this.#child.stderr);
    const read = this.#readStdout(this.#child.stdout);
    this.#exited = new Promise((resolve) => {
      spawnFailed = () => {
        this.#hasExited = true;
        resolve();
      };
      this.#child.on("close", (code, signal) => {
        // Frames still being decoded (a hello with an error just before exit 3) come first.
        void read.then(() => {
          this.#hasExited = true;
          this.#fail(this.#exitError(code, signal));
          resolve();
        });
      });
    });
  }

  /** The engine's hello line (rejects if the engine fails before writing it). */
  readonly hello: Promise<EngineFrame>;

  static start(options: EngineProcessOptions): EngineProcess {
    return new EngineProcess(options);
  }

  /** The engine's last stderr lines, oldest first. */
  get stderrTail(): readonly string[] {
    return [...this.#stderrTail];
  }

  /**
   * Sends a request and resolves with its answer of type `answer`; an `error` answer rejects with its code
   * mapped (OUT_OF_MEMORY → RESOURCE_EXHAUSTED). `afterStop`: still sent after an OUT_OF_MEMORY or INTERNAL
   * answer (reading the last good state).
   */
  request(type: string, answer: string, fields: Readonly<Record<string, unknown>> = {}, tensors: readonly OutgoingTensor[] = [], afterStop = false): Promise<EngineFrame> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    if (this.#closing) return Promise.reject(releasedError());
    if (this.#stopped !== undefined && !afterStop) return Promise.reject(this.#stopped);
    const id = this.#nextId++;
    let chunks: Uint8Array[];
    try {
      chunks = encodeMessage({ type, id, ...fields }, tensors);
    } catch (error) {
      return Promise.reject(AppError.from(error));
    }
    const answered = new Promise<EngineFrame>((resolve, reject) => this.#queue.push({ id, request: type, answer, resolve, reject }));
    for (const chunk of chunks) this.#child.stdin.write(chunk);
    if (this.#queue.length === 1) this.#armTimer();
    return answered;
  }

  /**
   * Asks the engine to shut down and waits up to `graceMs` for it to exit, then kills it. Later requests are
   * refused. Idempotent; never rejects.
   */
  close(graceMs: number): Promise<void> {
    this.#closed ??= this.#close(graceMs);
    return this.#closed;
  }

  async #close(graceMs: number): Promise<void> {
    if (!this.#hasExited && this.#failure === undefined && !this.#closing) {
      this.request("shutdown", "bye", {}, [], true).catch(() => undefined);
      this.#closing = true;
      this.#child.stdin.end();
      let timer: NodeJS.Timeout | undefined;
      const inTime = await Promise.race([this.#exited.then(() => true), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), graceMs)))]);
      clearTimeout(timer);
      if (!inTime) this.#kill();
    } else {
      this.#closing = true;
      this.#kill();
    }
    await this.#exited;
  }

  #readStderr(stderr: Readable): void {
    let partial = "";
    stderr.setEncoding("utf8");
    stderr.on("data", (text: string) => {
      const lines = (partial + text).split("\n");
      partial = lines.pop() ?? "";
      if (partial.length > STDERR_LINE_CHARS) {
        lines.push(partial);
        partial = "";
      }
      for (const line of lines) this.#stderrLine(line);
    });
    stderr.on("end", () => {
      if (partial !== "") this.#stderrLine(partial);
      partial = "";
    });
    stderr.on("error", () => undefined);
  }

  #stderrLine(raw: string): void {
    const line = raw.replace(/\r$/, "").slice(0, STDERR_LINE_CHARS);
    this.#stderrTail.push(line);
    if (this.#stderrTail.length > STDERR_TAIL_LINES) this.#stderrTail.shift();
    this.#options.onStderr?.(line);
  }

  async #readStdout(stdout: Readable): Promise<void> {
    const decoder = new FrameDecoder();
    try {
      for await (const chunk of stdout as AsyncIterable<Uint8Array>) {
        for (const frame of decoder.push(chunk)) this.#dispatch(frame);
        if (this.#failure !== undefined) return;
      }
    } catch (error) {
      this.#fail(AppError.from(error));
      this.#kill();
      return;
    }
    try {
      decoder.end();
    } catch (error) {
      this.#truncated = AppError.from(error);
    }
  }

  #dispatch({ message, tensors }: EngineFrame): void {
    if (this.#failure !== undefined) return;
    const head = this.#queue[0];
    const broken = (why: string): void => {
      this.#fail(protocolError(why));
      this.#kill();
    };
    if (head === undefined) return broken(`an unrequested ${message.type} message`);
    if (message.type === "hello" ? head.id !== undefined : message.id !== head.id) {
      return broken(`a ${message.type} message${message.id === undefined ? "" : ` for request ${message.id}`} while awaiting the answer to ${head.request}${head.id === undefined ? "" : ` ${head.id}`}`);
    }
    if (message.type !== "error" && message.type !== head.answer) return broken(`a ${message.type} message as the answer to ${head.request}`);
    this.#queue.shift();
    this.#armTimer();
    if (message.type === "error") {
      const error = engineError(message);
      if (error.code === Code.RESOURCE_EXHAUSTED || error.code === Code.INTERNAL) this.#stopped ??= error;
      head.reject(error);
    } else {
      head.resolve({ message, tensors });
    }
  }

  #armTimer(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const head = this.#queue[0];
    if (head === undefined || this.#failure !== undefined) return;
    const starting = head.request === "hello" || head.request === "init";
    const ms = starting ? (this.#options.startTimeoutMs ?? Math.max(this.#options.progressTimeoutMs, 120_000)) : this.#options.progressTimeoutMs;
    this.#timer = setTimeout(() => {
      this.#fail(new AppError(Code.DEADLINE_EXCEEDED, `the pytorch engine did not answer ${head.request === "hello" ? "at start" : head.request} within ${ms} ms and was stopped`));
      this.#kill();
    }, ms);
  }

  #fail(error: AppError): void {
    if (this.#failure !== undefined) return;
    this.#failure = error;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const queue = this.#queue;
    this.#queue = [];
    for (const pending of queue) pending.reject(error);
  }

  #kill(): void {
    if (this.#hasExited) return;
    const pid = this.#child.pid;
    try {
      if (pid === undefined) return;
      process.kill(-pid, "SIGKILL");
    } catch {
      this.#child.kill("SIGKILL");
    }
  }

  #exitError(code: number | null, signal: NodeJS.Signals | null): AppError {
    if (this.#closing) return releasedError();
    const tail = this.#stderrTail.join("\n");
    const cause = tail === "" ? undefined : new Error(`the pytorch engine's last stderr lines:\n${tail}`);
    const last = [...this.#stderrTail].reverse().find((line) => line.trim() !== "")?.trim();
    const said = last === undefined ? "" : `: ${last.length > LAST_LINE_CHARS ? `${last.slice(0, LAST_LINE_CHARS)}…` : last}`;
    if (code === 0 && this.#truncated !== undefined) return this.#truncated;
    const how = signal !== null ? `was killed by ${signal}${signal === "SIGKILL" ? " (the system may have run out of memory)" : ""}` : code === 0 ? "exited unexpectedly" : `exited with code ${code}`;
    // Killed from outside (the OOM killer, a preempted node, an operator) is not the job's fault: UNAVAILABLE
    // sends the job back to the queue, and its next attempt resumes from the last checkpoint (the queue's
    // delivery limit bounds a job killed every time). An engine that exits by itself failed the job.
    return new AppError(signal !== null ? Code.UNAVAILABLE : Code.INTERNAL, `the pytorch engine ${how}${said}`, cause === undefined ? {} : { cause });
  }
}

function releasedError(): AppError {
  return new AppError(Code.FAILED_PRECONDITION, "the pytorch engine was released");
}

function spawnError(command: string, error: NodeJS.ErrnoException): AppError {
  if (error.code === "ENOENT") return new AppError(Code.FAILED_PRECONDITION, `the pytorch engine cannot start: ${command} not found`, { cause: error });
  if (error.code === "EACCES") return new AppError(Code.FAILED_PRECONDITION, `the pytorch engine cannot start: ${command} is not executable`, { cause: error });
  return new AppError(Code.INTERNAL, `the pytorch engine cannot start: ${command}: ${error.code ?? error.message}`, { cause: error });
}

function engineError(message: EngineMessage): AppError {
  const code = typeof message.code === "string" ? ENGINE_CODES[message.code] : undefined;
  const text = typeof message.message === "string" && message.message !== "" ? message.message : "no reason given";
  if (code === undefined || code === Code.INTERNAL) return new AppError(Code.INTERNAL, `the pytorch engine failed: ${text}`);
  return new AppError(code, text);
}
