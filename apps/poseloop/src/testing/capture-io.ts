import type { CliIo } from "../cli/cli-io.js";

/** A CliIo that keeps what the CLI writes. */
export interface CapturedIo extends CliIo {
  stdoutText(): string;
  stderrText(): string;
}

export interface CaptureOptions {
  /** Both outputs are a terminal, as in an interactive shell; default false. */
  tty?: boolean;
  /** Overrides `tty` for stdout alone: false is `poseloop … > file` in a terminal. */
  stdoutTty?: boolean;
  /** Terminal width of both outputs; default 100. */
  columns?: number;
  env?: Record<string, string>;
  signal?: AbortSignal;
  cwd?: string;
}

export function captureIo(options: CaptureOptions = {}): CapturedIo {
  let stdout = "";
  let stderr = "";
  const tty = options.tty ?? false;
  const columns = options.columns ?? 100;
  return {
    stdout: {
      write: (chunk: string) => (stdout += chunk),
      isTTY: options.stdoutTty ?? tty,
      columns,
    },
    stderr: {
      write: (chunk: string) => (stderr += chunk),
      isTTY: tty,
      columns,
    },
    env: options.env ?? {},
    ...(options.signal === undefined ? {} : { signal: options.signal }),
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    stdoutText: () => stdout,
    stderrText: () => stderr,
  };
}
