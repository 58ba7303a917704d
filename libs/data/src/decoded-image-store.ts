import { createHash } from "node:crypto";
import { mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { threadId } from "node:worker_threads";
import { AppError, Code } from "@poseloop/core";
import { decodeImage, type RgbImage } from "@poseloop/vision";

export interface ImageCacheOptions {
  /** Bytes of decoded images kept in memory, least recently used evicted first; per loader worker. Default 256 MiB; 0: none. */
  readonly memoryBytes?: number;
  /**
   * A folder for decoded RGB files (the reference repos' disk cache, for when memory is short): one file per
   * image, keyed by its absolute path, modification time and size, so an edited image is decoded again.
   * Default: no disk cache.
   */
  readonly diskDir?: string;
}

export interface DecodedImageStoreOptions extends ImageCacheOptions {
  /** Deadline for reading one file (the image or its cached pixels); default 30 s. */
  readonly readTimeoutMs?: number;
  /** Deadline for decoding one image; default 30 s. */
  readonly decodeTimeoutMs?: number;
}

/** Where the store found images so far. */
export interface ImageStoreStats {
  memoryHits: number;
  diskHits: number;
  decoded: number;
  /** Disk-cache files that could not be written (the image was still served; the cache is only an optimization). */
  diskWriteFailures: number;
}

export const DEFAULT_IMAGE_MEMORY_BYTES = 256 * 1024 * 1024;

// "PLRG", format version, width, height: little-endian uint32 each, then width·height·3 bytes of RGB.
const MAGIC = 0x47524c50;
const FORMAT_VERSION = 1;
const HEADER_BYTES = 16;

/** How an image is named in errors: its id and the last two parts of its path, never the whole path. */
export function imageLabel(imageId: number, path: string): string {
  return `image ${imageId} (${basename(dirname(path))}/${basename(path)})`;
}

/**
 * Decoded images by path: an in-memory LRU bounded in bytes in front of an optional disk cache of raw RGB
 * files in front of the decoder. A missing file is NOT_FOUND and an undecodable one INVALID_ARGUMENT, each
 * naming the image. Concurrent requests for one image share one decode.
 */
export class DecodedImageStore {
  readonly #memoryBytes: number;
  readonly #diskDir: string | undefined;
  readonly #readTimeoutMs: number;
  readonly #decodeTimeoutMs: number;
  readonly #memory = new Map<string, RgbImage>();
  readonly #loading = new Map<string, Promise<RgbImage>>();
  readonly #createdDirs = new Set<string>();
  #memoryUsed = 0;
  #tempCounter = 0;
  readonly stats: ImageStoreStats = { memoryHits: 0, diskHits: 0, decoded: 0, diskWriteFailures: 0 };

  constructor(options: DecodedImageStoreOptions = {}) {
    this.#memoryBytes = options.memoryBytes ?? DEFAULT_IMAGE_MEMORY_BYTES;
    this.#diskDir = options.diskDir === undefined ? undefined : resolve(options.diskDir);
    this.#readTimeoutMs = options.readTimeoutMs ?? 30_000;
    this.#decodeTimeoutMs = options.decodeTimeoutMs ?? 30_000;
  }

  /** The decoded image at `path`; `label` names it in errors (see imageLabel). */
  get(path: string, label: string): Promise<RgbImage> {
    const cached = this.#memory.get(path);
    if (cached !== undefined) {
      this.stats.memoryHits++;
      // Re-inserting moves the entry to the young end of the Map's insertion order.
      this.#memory.delete(path);
      this.#memory.set(path, cached);
      return Promise.resolve(cached);
    }
    const loading = this.#loading.get(path);
    if (loading !== undefined) return loading;
    const load = this.#load(path, label).finally(() => this.#loading.delete(path));
    this.#loading.set(path, load);
    return load;
  }

  async #load(path: string, label: string): Promise<RgbImage> {
    const image = this.#diskDir === undefined ? await this.#decodeFile(path, label) : await this.#throughDisk(path, label, this.#diskDir);
    this.#remember(path, image);
    return image;
  }

  async #decodeFile(path: string, label: string): Promise<RgbImage> {
    const bytes = await this.#readSource(path, label);
    try {
      const image = await decodeImage(bytes, { timeoutMs: this.#decodeTimeoutMs });
      this.stats.decoded++;
      return image;
    } catch (error) {
      const mapped = AppError.from(error);
      throw new AppError(mapped.code, `${label}: ${mapped.message}`, { cause: error });
    }
  }

  async #readSource(path: string, label: string): Promise<Uint8Array> {
    try {
      return await readFile(path, { signal: AbortSignal.timeout(this.#readTimeoutMs) });
    } catch (error) {
      throw fileError(error, label);
    }
  }

  async #throughDisk(path: string, label: string, dir: string): Promise<RgbImage> {
    let key: string;
    try {
      const info = await stat(path, { bigint: true });
      if (!info.isFile()) throw new AppError(Code.NOT_FOUND, `${label} is not a file`);
      key = createHash("sha256").update(`${resolve(path)}\n${info.mtimeNs}\n${info.size}`).digest("hex");
    } catch (error) {
      throw fileError(error, label);
    }
    const file = join(dir, key.slice(0, 2), `${key}.rgb`);
    const cached = await this.#readCached(file);
    if (cached !== undefined) {
      this.stats.diskHits++;
      return cached;
    }
    const image = await this.#decodeFile(path, label);
    await this.#writeCached(file, image);
    return image;
  }

  /** The cached pixels, or undefined when the file is absent or not a complete cache file (it is then rewritten). */
  async #readCached(file: string): Promise<RgbImage | undefined> {
    let bytes: Buffer;
    try {
      bytes = await readFile(file, { signal: AbortSignal.timeout(this.#readTimeoutMs) });
    } catch {
      // Absent, or unreadable: the cache is only an optimization, so decode the image instead.
      return undefined;
    }
    if (bytes.length < HEADER_BYTES) return undefined;
    const view = new DataView(bytes.buffer, bytes.byteOffset, HEADER_BYTES);
    const width = view.getUint32(8, true);
    const height = view.getUint32(12, true);
    if (view.getUint32(0, true) !== MAGIC || view.getUint32(4, true) !== FORMAT_VERSION) return undefined;
    if (width === 0 || height === 0 || bytes.length !== HEADER_BYTES + width * height * 3) return undefined;
    return { width, height, data: new Uint8Array(bytes.buffer, bytes.byteOffset + HEADER_BYTES, width * height * 3) };
  }

  /** Writes through a temporary file and a rename, so another worker never reads a half-written file. */
  async #writeCached(file: string, image: RgbImage): Promise<void> {
    const header = new DataView(new ArrayBuffer(HEADER_BYTES));
    header.setUint32(0, MAGIC, true);
    header.setUint32(4, FORMAT_VERSION, true);
    header.setUint32(8, image.width, true);
    header.setUint32(12, image.height, true);
    const temp = `${file}.${process.pid}-${threadId}-${this.#tempCounter++}.tmp`;
    try {
      const folder = dirname(file);
      if (!this.#createdDirs.has(folder)) {
        await mkdir(folder, { recursive: true });
        this.#createdDirs.add(folder);
      }
      await writeFile(temp, Buffer.concat([new Uint8Array(header.buffer), image.data]), { signal: AbortSignal.timeout(this.#readTimeoutMs) });
      await rename(temp, file);
    } catch {
      this.stats.diskWriteFailures++;
      await rm(temp, { force: true }).catch(() => undefined);
    }
  }

  #remember(path: string, image: RgbImage): void {
    const size = image.data.byteLength;
    if (size > this.#memoryBytes) return;
    this.#memory.set(path, image);
    this.#memoryUsed += size;
    for (const [oldest, evicted] of this.#memory) {
      if (this.#memoryUsed <= this.#memoryBytes) break;
      this.#memory.delete(oldest);
      this.#memoryUsed -= evicted.data.byteLength;
    }
  }
}

function fileError(error: unknown, label: string): AppError {
  const mapped = AppError.from(error);
  if (mapped.code === Code.NOT_FOUND) return new AppError(Code.NOT_FOUND, mapped.message.startsWith(label) ? mapped.message : `${label} not found`, { cause: error });
  return new AppError(mapped.code, `${label} could not be read: ${mapped.message}`, { cause: error });
}
