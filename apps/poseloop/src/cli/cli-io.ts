import type { Env } from "@poseloop/core";

/** Where the CLI writes: process.stdout / stderr, or a buffer in tests. */
export interface CliOutput {
  write(chunk: string): unknown;
  /** A terminal gets live progress lines; anything else plain lines. */
  readonly isTTY?: boolean;
  /** Terminal width; default 80. */
  readonly columns?: number;
}

/** Everything the CLI touches of its process, so that tests run it in-process. */
export interface CliIo {
  readonly stdout: CliOutput;
  readonly stderr: CliOutput;
  /** POSELOOP_TRAINER_ADDR, POSELOOP_INFERENCER_ADDR, POSELOOP_TOKEN, POSELOOP_FFMPEG (see cli-environment.ts). */
  readonly env: Env;
  /** Aborts the running command (Ctrl-C). */
  readonly signal?: AbortSignal;
  /** Directory relative paths are read from; default process.cwd(). */
  readonly cwd?: string;
}

/** Writes whole lines to an output. */
export class LineWriter {
  readonly #output: CliOutput;

  constructor(output: CliOutput) {
    this.#output = output;
  }

  get isTTY(): boolean {
    return this.#output.isTTY === true;
  }

  get columns(): number {
    const columns = this.#output.columns;
    return columns !== undefined && columns > 20 ? columns : 80;
  }

  line(text = ""): void {
    this.#output.write(`${text}\n`);
  }

  lines(texts: readonly string[]): void {
    if (texts.length > 0) this.#output.write(`${texts.join("\n")}\n`);
  }

  /** Raw text, for live lines redrawn in place. */
  raw(text: string): void {
    this.#output.write(text);
  }
}

/**
 * One line at the bottom of a terminal, redrawn in place (a progress bar); other lines are printed above
 * it. On anything but a terminal it draws nothing: callers print plain lines instead. The CLI draws it on
 * stderr, beside its other messages, so that stdout holds results only.
 */
export class LiveLine {
  readonly #out: LineWriter;
  #current = "";

  constructor(out: LineWriter) {
    this.#out = out;
  }

  /** Replaces the live line (cut to the terminal's width, so it never wraps). */
  update(text: string): void {
    if (!this.#out.isTTY) return;
    this.#current = text.length >= this.#out.columns ? text.slice(0, this.#out.columns - 1) : text;
    this.#out.raw(`\r\x1b[2K${this.#current}`);
  }

  /** Prints a line above the live line. */
  print(text: string): void {
    if (this.#out.isTTY && this.#current !== "") {
      this.#out.raw(`\r\x1b[2K${text}\n${this.#current}`);
    } else {
      this.#out.line(text);
    }
  }

  /**
   * Leaves the live line on the screen as it is now (an epoch's last bar) and starts the next one on a
   * new line, so the next update does not draw over it.
   */
  keep(): void {
    if (this.#out.isTTY && this.#current !== "") this.#out.raw("\n");
    this.#current = "";
  }

  /** Removes the live line. */
  clear(): void {
    if (this.#out.isTTY && this.#current !== "") this.#out.raw("\r\x1b[2K");
    this.#current = "";
  }
}
