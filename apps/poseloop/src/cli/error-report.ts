import { AppError, Code } from "@poseloop/core";

/** Exit codes of the poseloop command. */
export const ExitCode = {
  OK: 0,
  /** The command ran and failed (a service refused, a job failed, a file was missing). */
  FAILURE: 1,
  /** The command line was wrong; nothing was sent. */
  USAGE: 2,
  /** Interrupted (Ctrl-C), as shells report SIGINT. */
  INTERRUPTED: 130,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** A wrong command line: reported with a pointer to the command's help, exit code 2. */
export class UsageError extends Error {
  override readonly name = "UsageError";
  /** The command whose --help to point at; undefined: the top level. */
  readonly command: string | undefined;

  constructor(message: string, command?: string) {
    super(message);
    this.command = command;
  }
}

/** The exit code for an error that ended a command. */
export function exitCodeOf(error: unknown, interrupted = false): ExitCode {
  if (error instanceof UsageError) return ExitCode.USAGE;
  if (interrupted && (AppError.is(error, Code.CANCELLED) || (error instanceof Error && error.name === "AbortError"))) return ExitCode.INTERRUPTED;
  return ExitCode.FAILURE;
}

/**
 * The lines written to stderr for an error: "poseloop: <message>", then each problem indented, then for a
 * usage error where to find help. A message that ends with its problems joined by "; " (as
 * AppError.invalid writes them) is shortened, so nothing is printed twice. Stack traces never appear.
 */
export function formatError(error: unknown): string[] {
  if (error instanceof UsageError) {
    const help = error.command === undefined ? "poseloop --help" : `poseloop ${error.command} --help`;
    return [`poseloop: ${error.message}`, `Run '${help}' for usage.`];
  }
  // An error of this process's own (a file it could not read, a bug) is shown as it is: the user is the
  // one who can act on it, and no service's internals are in it.
  if (!(error instanceof AppError)) return [`poseloop: ${error instanceof Error ? error.message : String(error)}`];
  const appError = error;
  let message = appError.message;
  const problems = appError.problems;
  if (problems.length > 0) {
    const joined = problems.join("; ");
    if (message.endsWith(`: ${joined}`)) message = message.slice(0, -joined.length - 2);
  }
  const internal = /^internal error(?: \(ref ([0-9a-f]+)\))?$/.exec(message);
  if (appError.code === Code.INTERNAL && internal !== null) {
    message = internal[1] === undefined ? "the service failed with an internal error (its log has the details)" : `the service failed with an internal error (its log has the details under ref ${internal[1]})`;
  }
  return [`poseloop: ${message}`, ...problems.map((problem) => `  - ${problem}`)];
}
