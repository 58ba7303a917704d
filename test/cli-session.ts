import { runCli, type CliIo } from "@poseloop/cli";

export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs the poseloop CLI in this process the way a user's shell would, with the environment and working
 * directory `where()` gives at the time of the call (tests set them once their services are up).
 */
export function cliSession(where: () => { env: Record<string, string>; cwd: string }): (argv: readonly string[]) => Promise<CliResult> {
  return async (argv) => {
    let stdout = "";
    let stderr = "";
    const { env, cwd } = where();
    const io: CliIo = { stdout: { write: (chunk: string) => (stdout += chunk) }, stderr: { write: (chunk: string) => (stderr += chunk) }, env, cwd };
    const code = await runCli(argv, io);
    return { code, stdout, stderr };
  };
}

/** `--json` output of a stream or a followed job: one JSON document per line. */
export const jsonLines = <T>(text: string): T[] => text.trimEnd().split("\n").map((line) => JSON.parse(line) as T);
