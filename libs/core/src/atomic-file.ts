import { randomBytes } from "node:crypto";
import { open, rename, rm, type FileHandle } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { AppError, Code } from "./app-error.js";

export interface AtomicWriteOptions {
  /** The new file's modification (and access) time, set before it takes the target's place. */
  readonly mtime?: Date;
}

/**
 * A file that takes its destination's place whole, so that readers see the old file or the complete new one,
 * never a torn one, even across a crash: it is written as a temporary file in the destination's folder, and
 * `commit` fsyncs it, renames it over the destination and fsyncs the folder (so the rename itself is durable).
 * For content whose destination is known only once written (a content-addressed blob); otherwise
 * `writeFileAtomic`. A temporary file left by a crash is named `.<name>.<random>.partial`.
 */
export class AtomicFile {
  readonly #folder: string;
  readonly #temp: string;
  readonly #handle: FileHandle;
  #closed = false;

  private constructor(folder: string, temp: string, handle: FileHandle) {
    this.#folder = folder;
    this.#temp = temp;
    this.#handle = handle;
  }

  /** Starts a temporary file in `folder` (which must exist); `name` only names the temporary file. */
  static async create(folder: string, name: string): Promise<AtomicFile> {
    // A bounded name part keeps the temporary name within the 255 bytes a file name may have.
    const temp = join(folder, `.${name.slice(0, 64)}.${randomBytes(6).toString("hex")}.partial`);
    return new AtomicFile(folder, temp, await open(temp, "wx"));
  }

  /** Appends `data` (strings as UTF-8). */
  async write(data: Uint8Array | string): Promise<void> {
    await this.#handle.writeFile(data);
  }

  /**
   * Puts the file in place at `path`, which must lie in the folder it was created in. On failure the temporary
   * file is removed and the destination is unchanged.
   */
  async commit(path: string, options: AtomicWriteOptions = {}): Promise<void> {
    if (resolve(dirname(path)) !== resolve(this.#folder)) {
      await this.discard();
      throw new AppError(Code.INVALID_ARGUMENT, `an atomic file created in ${this.#folder} cannot be committed to ${path}`);
    }
    try {
      if (options.mtime !== undefined) await this.#handle.utimes(options.mtime, options.mtime);
      await this.#handle.sync();
      this.#closed = true;
      await this.#handle.close();
      await rename(this.#temp, path);
    } catch (error) {
      await this.discard();
      throw error;
    }
    const folder = await open(this.#folder, "r");
    try {
      await folder.sync();
    } finally {
      await folder.close();
    }
  }

  /** Drops the temporary file; the destination is untouched. Never throws. */
  async discard(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      await this.#handle.close().catch(() => undefined);
    }
    await rm(this.#temp, { force: true }).catch(() => undefined);
  }
}

/**
 * Writes a file so that readers see the old file or the whole new one, never a torn one, even across a crash:
 * a temporary file beside it, fsync, rename over the target, fsync of the folder (see AtomicFile). A failure
 * removes the temporary file. The folder must exist.
 */
export async function writeFileAtomic(path: string, data: Uint8Array | string, options: AtomicWriteOptions = {}): Promise<void> {
  const file = await AtomicFile.create(dirname(path), basename(path));
  try {
    await file.write(data);
  } catch (error) {
    await file.discard();
    throw error;
  }
  await file.commit(path, options);
}
