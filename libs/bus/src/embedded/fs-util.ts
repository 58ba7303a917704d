import { randomBytes } from "node:crypto";
import { watch, type FSWatcher } from "node:fs";
import { mkdir, open, readFile, rename, rm, stat, unlink } from "node:fs/promises";
import { dirname, join } from "node:path";
import { AppError, AsyncQueue, Code, sleep } from "@poseloop/core";

/**
 * Writes a file so that readers see the old content or the new, never a mix: a temporary file in the same
 * directory, fsync, rename over the target. `mtime` sets the new file's modification time before the rename.
 */
export async function atomicWriteFile(path: string, data: Uint8Array | string, mtime?: Date): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const temp = join(dirname(path), `.tmp-${process.pid}-${randomBytes(6).toString("hex")}`);
  const handle = await open(temp, "w");
  try {
    await handle.writeFile(data);
    await handle.sync();
    if (mtime !== undefined) await handle.utimes(mtime, mtime);
  } finally {
    await handle.close();
  }
  try {
    await rename(temp, path);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}

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
