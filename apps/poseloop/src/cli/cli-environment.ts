import { POSELOOP_ENV_VARIABLES, unknownVariables, type Env } from "@poseloop/core";

/**
 * One warning line per POSELOOP_* variable in `env` that no PoseLoop program reads: a typo in the name of
 * the trainer's address otherwise leaves the CLI on the default address without a word. The services' and
 * the demo's variables count as known, since users run them from the same shell.
 */
export function unknownVariableWarnings(env: Env): string[] {
  const set = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== undefined));
  return unknownVariables(set, "POSELOOP_", POSELOOP_ENV_VARIABLES).map(
    ({ name, suggestion }) => `poseloop: warning: unknown environment variable ${name}${suggestion === undefined ? "" : ` (did you mean ${suggestion}?)`}`,
  );
}
