import { spawn, type ChildProcessByStdio } from "node:child_process";
import { createRequire } from "node:module";
import type { Readable, Writable } from "node:stream";
import { createInterface } from "node:readline";
import { AppError, Code, abortReason, type Env } from "@poseloop/core";
import { parseDecodedStreamInfo, videoDecodeArgs, videoEncodeArgs, type DecodedStreamInfo, type DecodeSpec, type EncodeSpec } from "./ffmpeg-args.js";

/**
 * The ffmpeg executable: POSELOOP_FFMPEG when set, else the static build that @ffmpeg-installer/ffmpeg
 * installed for this platform. Loaded on demand, so commands without video never look for it.
 */
export function ffmpegPath(env: Env): string {
  const override = env["POSELOOP_FFMPEG"]?.trim();
  if (override !== undefined && override !== "") return override;
  try {
    const installer = createRequire(import.meta.url)("@ffmpeg-installer/ffmpeg") as { path: string };
    return installer.path;
  } catch (error) {
    // The installer throws a string when it has no binary for this platform.
    throw new AppError(
      Code.FAILED_PRECONDITION,
      `no ffmpeg: @ffmpeg-installer/ffmpeg has no binary for ${process.platform}-${process.arch}; set POSELOOP_FFMPEG to an ffmpeg executable`,
      { cause: error },
    );
  }
}

/** The last lines ffmpeg wrote to stderr, for error messages. */
class StderrTail {
  readonly lines: string[] = [];
  /** Resolves once ffmpeg's stderr has been read to its end. */
  readonly closed: Promise<void>;
  readonly #keep: number;

  constructor(stream: Readable, keep = 40, onLine?: (line: string) => void) {
    this.#keep = keep;
    const lines = createInterface({ input: stream, crlfDelay: Infinity });
    this.closed = new Promise((resolve) => lines.once("close", resolve));
    lines.on("line", (line) => {
      this.lines.push(line);
      if (this.lines.length > this.#keep) this.lines.shift();
      onLine?.(line);
    });
  }

  /** The last meaningful line (ffmpeg ends with its summary and "Conversion failed!"). */
  reason(): string {
    const meaningful = this.lines.map((line) => line.trim()).filter((line) => line !== "" && line !== "Conversion failed!" && !line.startsWith("frame="));
    return meaningful.at(-1) ?? "no output";
  }
}

function spawnFfmpeg(path: string, args: readonly string[], stdin: "pipe" | "ignore"): ChildProcessByStdio<Writable | null, Readable, Readable> {
  return spawn(path, [...args], { stdio: [stdin, "pipe", "pipe"] }) as ChildProcessByStdio<Writable | null, Readable, Readable>;
}

function exitOf(child: { once(event: "exit", listener: (code: number | null, signal: NodeJS.Signals | null) => void): unknown; once(event: "error", listener: (error: Error) => void): unknown }): Promise<{ code: number | null; error?: Error }> {
  return new Promise((resolve) => {
    child.once("error", (error) => resolve({ code: null, error }));
    child.once("exit", (code) => resolve({ code }));
  });
}

function spawnError(path: string, error: Error): AppError {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === "ENOENT") return new AppError(Code.FAILED_PRECONDITION, `ffmpeg not found at ${path} (set POSELOOP_FFMPEG)`, { cause: error });
  if (code === "EACCES") return new AppError(Code.FAILED_PRECONDITION, `ffmpeg at ${path} is not executable`, { cause: error });
  return new AppError(Code.INTERNAL, `ffmpeg at ${path} could not start: ${error.message}`, { cause: error });
}

/**
 * A video decoded by an ffmpeg child process into RGB24 frames, read through a pipe at the pace they are
 * consumed: when the consumer stops pulling, the pipe fills and ffmpeg waits. `close()` ends the process.
 */
export class VideoFrameReader {
  readonly info: DecodedStreamInfo;
  readonly #child: ChildProcessByStdio<Writable | null, Readable, Readable>;
  readonly #stderr: StderrTail;
  readonly #exit: Promise<{ code: number | null; error?: Error }>;
  readonly #input: string;

  private constructor(child: ChildProcessByStdio<Writable | null, Readable, Readable>, stderr: StderrTail, exit: Promise<{ code: number | null; error?: Error }>, info: DecodedStreamInfo, input: string) {
    this.#child = child;
    this.#stderr = stderr;
    this.#exit = exit;
    this.info = info;
    this.#input = input;
  }

  /** Starts ffmpeg and waits for it to report the frame size (within `timeoutMs`, default 15 s). */
  static async open(ffmpeg: string, spec: DecodeSpec, options: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<VideoFrameReader> {
    const child = spawnFfmpeg(ffmpeg, videoDecodeArgs(spec), "ignore");
    const exit = exitOf(child);
    let resolveInfo!: (info: DecodedStreamInfo) => void;
    const infoPromise = new Promise<DecodedStreamInfo>((resolve) => (resolveInfo = resolve));
    const seen: string[] = [];
    const stderr = new StderrTail(child.stderr, 40, (line) => {
      if (seen.length > 200) return;
      seen.push(line);
      const info = parseDecodedStreamInfo(seen);
      if (info !== undefined) resolveInfo(info);
    });
    let timer: NodeJS.Timeout | undefined;
    const onAbort = (): void => void child.kill("SIGKILL");
    options.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      const info = await Promise.race([
        infoPromise,
        exit.then(async ({ code, error }) => {
          if (error !== undefined) throw spawnError(ffmpeg, error);
          await stderr.closed;
          // A clip short enough to fit in the pipe is decoded before its stream line is even parsed.
          const info = parseDecodedStreamInfo(seen);
          if (code === 0 && info !== undefined) return info;
          throw new AppError(Code.INVALID_ARGUMENT, `ffmpeg cannot read ${spec.input}: ${stderr.reason()} (exit code ${code})`);
        }),
        new Promise<never>((_resolve, reject) => {
          timer = setTimeout(() => reject(new AppError(Code.DEADLINE_EXCEEDED, `ffmpeg did not start decoding ${spec.input} within ${options.timeoutMs ?? 15_000} ms`)), options.timeoutMs ?? 15_000);
        }),
      ]);
      if (options.signal?.aborted === true) throw abortReason(options.signal);
      return new VideoFrameReader(child, stderr, exit, info, spec.input);
    } catch (error) {
      child.kill("SIGKILL");
      throw error;
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
    }
  }

  /** Bytes in one frame. */
  get frameBytes(): number {
    return this.info.width * this.info.height * 3;
  }

  /**
   * The frames, each a new buffer of width × height × 3 bytes. Ends when the video does; throws when
   * ffmpeg fails midway (a corrupt file), with ffmpeg's own reason.
   */
  async *frames(): AsyncGenerator<Uint8Array, void, undefined> {
    const size = this.frameBytes;
    let frame = Buffer.allocUnsafe(size);
    let filled = 0;
    for await (const chunk of this.#child.stdout as AsyncIterable<Buffer>) {
      let offset = 0;
      while (offset < chunk.length) {
        const take = Math.min(size - filled, chunk.length - offset);
        chunk.copy(frame, filled, offset, offset + take);
        filled += take;
        offset += take;
        if (filled === size) {
          yield frame;
          frame = Buffer.allocUnsafe(size);
          filled = 0;
        }
      }
    }
    const { code, error } = await this.#exit;
    if (error !== undefined) throw new AppError(Code.INTERNAL, `ffmpeg failed decoding ${this.#input}: ${error.message}`, { cause: error });
    if (code !== 0) await this.#stderr.closed;
    if (code !== 0) throw new AppError(Code.INVALID_ARGUMENT, `ffmpeg failed decoding ${this.#input}: ${this.#stderr.reason()} (exit code ${code})`);
  }

  /** Stops ffmpeg (a no-op once it has exited). */
  async close(): Promise<void> {
    if (this.#child.exitCode === null && this.#child.signalCode === null) this.#child.kill("SIGKILL");
    await this.#exit;
  }
}

/**
 * An ffmpeg child process encoding RGB24 frames from its stdin into a video file. `write` waits while the
 * pipe is full, so a slow encoder slows the producer instead of buffering frames in memory.
 */
export class VideoFrameWriter {
  readonly spec: EncodeSpec;
  readonly #child: ChildProcessByStdio<Writable | null, Readable, Readable>;
  readonly #stdin: Writable;
  readonly #stderr: StderrTail;
  readonly #exit: Promise<{ code: number | null; error?: Error }>;
  readonly #ffmpeg: string;
  #frames = 0;

  constructor(ffmpeg: string, spec: EncodeSpec) {
    this.spec = spec;
    this.#ffmpeg = ffmpeg;
    this.#child = spawnFfmpeg(ffmpeg, videoEncodeArgs(spec), "pipe");
    this.#stdin = this.#child.stdin!;
    // A dead encoder shows up as EPIPE here; its reason comes from the exit code and stderr instead.
    this.#stdin.on("error", () => undefined);
    this.#child.stdout.resume();
    this.#stderr = new StderrTail(this.#child.stderr);
    this.#exit = exitOf(this.#child);
  }

  get framesWritten(): number {
    return this.#frames;
  }

  async write(rgb: Uint8Array): Promise<void> {
    const expected = this.spec.width * this.spec.height * 3;
    if (rgb.length !== expected) {
      throw new AppError(Code.INVALID_ARGUMENT, `a ${this.spec.width}x${this.spec.height} frame has ${expected} bytes, got ${rgb.length}`);
    }
    if (this.#stdin.destroyed || this.#stdin.writableEnded || this.#child.exitCode !== null) await this.#failure();
    this.#frames++;
    if (this.#stdin.write(rgb)) return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        this.#stdin.off("drain", done);
        this.#stdin.off("close", done);
        resolve();
      };
      this.#stdin.on("drain", done);
      this.#stdin.on("close", done);
    });
    if (this.#stdin.destroyed && this.#child.exitCode !== null) await this.#failure();
  }

  /** Ends the input and waits for ffmpeg to write the file. */
  async finish(): Promise<void> {
    this.#stdin.end();
    const { code, error } = await this.#exit;
    if (error !== undefined) throw spawnError(this.#ffmpeg, error);
    if (code !== 0) await this.#failure();
  }

  /** Stops ffmpeg without finishing the file. */
  async abort(): Promise<void> {
    if (this.#child.exitCode === null && this.#child.signalCode === null) this.#child.kill("SIGKILL");
    await this.#exit;
  }

  async #failure(): Promise<never> {
    const { code, error } = await this.#exit;
    if (error !== undefined) throw spawnError(this.#ffmpeg, error);
    await this.#stderr.closed;
    throw new AppError(Code.INTERNAL, `ffmpeg failed writing ${this.spec.output}: ${this.#stderr.reason()} (exit code ${code})`);
  }
}
