import { readFile } from "node:fs/promises";

/**
 * The CLI's version: its package's, read when asked. The sources (src/cli) and the build (dist/cli) are
 * both two folders below package.json, so one relative path serves both; nothing to keep in step.
 */
export async function cliVersion(): Promise<string> {
  const manifest = JSON.parse(await readFile(new URL("../../package.json", import.meta.url), "utf8")) as { version?: unknown };
  return typeof manifest.version === "string" ? manifest.version : "unknown";
}
