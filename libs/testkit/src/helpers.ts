import { execFileSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AppError, Code, sleep } from "@poseloop/core";

/** A new temporary directory and a function that removes it. */
export async function makeTempDir(prefix = "poseloop-test-"): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Polls `check` until it returns a value other than undefined/false, or fails after `timeoutMs`. */
export async function waitFor<T>(
  check: () => T | undefined | false | Promise<T | undefined | false>,
  options: { timeoutMs?: number; intervalMs?: number; what?: string } = {},
): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 10_000);
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) {
      throw new AppError(Code.DEADLINE_EXCEEDED, `timed out waiting for ${options.what ?? "a condition"}`);
    }
    await sleep(options.intervalMs ?? 20);
  }
}

/** Collects up to `count` items of an async iterable (or all, when it ends first). */
export async function take<T>(iterable: AsyncIterable<T>, count: number): Promise<T[]> {
  const items: T[] = [];
  if (count <= 0) return items;
  for await (const item of iterable) {
    items.push(item);
    if (items.length >= count) break;
  }
  return items;
}

/**
 * The environment variables `load` reads, whatever their values: it gets an environment that records every
 * name asked for and has none set, so config loaders can be checked against the list of known names.
 */
export function variablesRead(load: (env: Readonly<Record<string, string | undefined>>) => unknown): Set<string> {
  const read = new Set<string>();
  const recording = new Proxy(
    {},
    {
      get: (_target, name) => {
        if (typeof name === "string") read.add(name);
        return undefined;
      },
    },
  );
  load(recording);
  return read;
}

/**
 * The pids of `parent`'s child processes whose command line matches `pattern` (pgrep -P -f), e.g. the engine
 * processes a trainer runs, for a test that kills one as the OOM killer would.
 */
export function childProcesses(parent: number, pattern: string): number[] {
  try {
    return execFileSync("pgrep", ["-P", String(parent), "-f", pattern], { encoding: "utf8" })
      .trim()
      .split("\n")
      .filter((line) => line !== "")
      .map(Number);
  } catch {
    // pgrep exits 1 when nothing matches.
    return [];
  }
}
