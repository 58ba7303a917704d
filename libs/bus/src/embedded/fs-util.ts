import { watch, type FSWatcher } from "node:fs";
import { mkdir, open, readFile, stat, unlink } from "node:fs/promises";
import { dirname } from "node:path";
import { AppError, AsyncQueue, Code, sleep } from "@poseloop/core";

/** The file's content parsed as JSON, or undefined when it does not exist. */
export async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(path, "utf8")) as T;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
}

/**
 * Runs `fn` holding an exclusive lock shared by every process on the machine (a lock file created with
 * O_EXCL). A lock older than `staleMs` belongs to a dead process and is broken.
 */
export async function withFileLock<T>(
  lockPath: string,
  fn: () => Promise<T>,
  options: { timeoutMs?: number; staleMs?: number } = {},
): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 10_000);
  const staleMs = options.staleMs ?? 30_000;
  await mkdir(dirname(lockPath), { recursive: true });
  for (let attempt = 0; ; attempt++) {
    try {
      const handle = await open(lockPath, "wx");
      await handle.writeFile(String(process.pid));
      await handle.close();
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      const info = await stat(lockPath).catch(() => undefined);
      if (info !== undefined && Date.now() - info.mtimeMs > staleMs) {
        await unlink(lockPath).catch(() => undefined);
        continue;
      }
      if (Date.now() > deadline) throw new AppError(Code.UNAVAILABLE, `timed out waiting for lock ${lockPath}`);
      await sleep(Math.min(50, 2 + attempt));
    }
  }
  try {
    return await fn();
  } finally {
    await unlink(lockPath).catch(() => undefined);
  }
}

/**
 * Ticks whenever something in `dir` may have changed: on file-system notifications, and every `pollMs`
 * regardless, because notifications are not delivered on every file system (network mounts, some
 * containers). The first tick comes at once. Ends when `signal` aborts.
 */
export async function* watchDirectory(dir: string, signal: AbortSignal, pollMs = 250): AsyncGenerator<void> {
  await mkdir(dir, { recursive: true });
  const ticks = new AsyncQueue<void>({ limit: 1 });
  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(dir, { persistent: false }, () => ticks.push());
    watcher.on("error", () => undefined);
  } catch {
    watcher = undefined;
  }
  const timer = setInterval(() => ticks.push(), pollMs);
  timer.unref();
  try {
    yield;
    for (;;) {
      try {
        await ticks.next(signal);
      } catch {
        return;
      }
      yield;
    }
  } finally {
    clearInterval(timer);
    watcher?.close();
  }
}

/** A name usable as one path segment, reversible: object names contain "/". */
export function encodeSegment(name: string): string {
  return encodeURIComponent(name).replaceAll(".", "%2E");
}

export function decodeSegment(segment: string): string {
  return decodeURIComponent(segment);
}
