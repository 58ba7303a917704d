import type { CliIo } from "../cli/cli-io.js";

/** A CliIo that keeps what the CLI writes. */
export interface CapturedIo extends CliIo {
  stdoutText(): string;
  stderrText(): string;
}

export function captureIo(options: { tty?: boolean; columns?: number; env?: Record<string, string>; signal?: AbortSignal; cwd?: string } = {}): CapturedIo {
  let stdout = "";
  let stderr = "";
  return {
    stdout: {
      write: (chunk: string) => (stdout += chunk),
      isTTY: options.tty ?? false,
      columns: options.columns ?? 100,
    },
    stderr: { write: (chunk: string) => (stderr += chunk) },
    env: options.env ?? {},
    ...(options.signal === undefined ? {} : { signal: options.signal }),
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    stdoutText: () => stdout,
    stderrText: () => stderr,
  };
}
