import { runCli } from "../cli/run-cli.js";
import { captureIo, type CaptureOptions } from "./capture-io.js";

export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface CliRunner {
  /** Runs `poseloop argv…` in this process with captured output. */
  readonly cli: (argv: readonly string[]) => Promise<CliResult>;
  /** A `--json` command's document; a failed command fails the test with its stderr, not a JSON parse error. */
  readonly cliJson: <T>(argv: readonly string[]) => Promise<T>;
}

/** Runs the CLI as a user would, with the environment and directory `options()` gives at each call. */
export function cliRunner(options: () => CaptureOptions): CliRunner {
  const cli = async (argv: readonly string[]): Promise<CliResult> => {
    const io = captureIo(options());
    const code = await runCli(argv, io);
    return { code, stdout: io.stdoutText(), stderr: io.stderrText() };
  };
  return {
    cli,
    cliJson: async <T>(argv: readonly string[]): Promise<T> => {
      const { code, stdout, stderr } = await cli(argv);
      if (code !== 0) throw new Error(`poseloop ${argv.join(" ")} exited ${code}: ${stderr}`);
      return JSON.parse(stdout) as T;
    },
  };
}
