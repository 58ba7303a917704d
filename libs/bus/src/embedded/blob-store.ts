import { createReadStream } from "node:fs";
import { mkdir, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { AppError, AtomicFile, Code, writeFileAtomic } from "@poseloop/core";
import { chunksOf, DigestAccumulator, isDigest } from "../digest.js";
import type { BlobInfo, BlobSource, BlobStore } from "../types.js";
import { decodeSegment, encodeSegment, readJson } from "./fs-util.js";

/**
 * A BlobStore in a directory: content-addressed data files (data/<sha256 hex>) and one small index file per
 * name (names/<encoded name>.json). Writes are atomic; any number of processes can share the directory.
 */
export class FsBlobStore implements BlobStore {
  readonly #dir: string;

  constructor(dir: string) {
    this.#dir = dir;
  }

  async put(name: string, source: BlobSource, options: { signal?: AbortSignal } = {}): Promise<BlobInfo> {
    checkName(name);
    const dataDir = join(this.#dir, "data");
    await mkdir(dataDir, { recursive: true });
    const digest = new DigestAccumulator();
    // The data file's name is its digest, known once the last chunk is in.
    const upload = await AtomicFile.create(dataDir, "upload");
    let info: BlobInfo;
    try {
      for await (const chunk of chunksOf(source)) {
        if (options.signal?.aborted === true) throw new AppError(Code.CANCELLED, "upload cancelled");
        digest.update(chunk);
        await upload.write(chunk);
      }
      info = { name, sizeBytes: digest.sizeBytes, digest: digest.digest() };
      await upload.commit(this.#dataPath(info.digest));
    } catch (error) {
      await upload.discard();
      throw AppError.from(error);
    }
    await mkdir(join(this.#dir, "names"), { recursive: true });
    await writeFileAtomic(this.#indexPath(name), JSON.stringify(info));
    return info;
  }

  async get(name: string, options: { signal?: AbortSignal } = {}): Promise<{ info: BlobInfo; data: AsyncIterable<Uint8Array> } | undefined> {
    const info = await this.stat(name);
    if (info === undefined) return undefined;
    const path = this.#dataPath(info.digest);
    const signal = options.signal;
    async function* read(): AsyncGenerator<Uint8Array> {
      const stream = createReadStream(path, { highWaterMark: 512 * 1024, ...(signal === undefined ? {} : { signal }) });
      try {
        for await (const chunk of stream) yield chunk as Buffer;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") {
          throw new AppError(Code.DATA_LOSS, `the data of ${name} is missing from the store`, { cause: error });
        }
        throw AppError.from(error);
      }
    }
    return { info, data: read() };
  }

  async stat(name: string): Promise<BlobInfo | undefined> {
    checkName(name);
    return readJson<BlobInfo>(this.#indexPath(name));
  }

  async delete(name: string): Promise<void> {
    // Data files are shared by identical blobs; only the name goes.
    await rm(this.#indexPath(name), { force: true });
  }

  async list(prefix = ""): Promise<BlobInfo[]> {
    let files: string[];
    try {
      files = await readdir(join(this.#dir, "names"));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw error;
    }
    const infos: BlobInfo[] = [];
    for (const file of files) {
      if (!file.endsWith(".json")) continue;
      const name = decodeSegment(file.slice(0, -".json".length));
      if (!name.startsWith(prefix)) continue;
      const info = await this.stat(name);
      if (info !== undefined) infos.push(info);
    }
    return infos.sort((a, b) => a.name.localeCompare(b.name));
  }

  #indexPath(name: string): string {
    return join(this.#dir, "names", `${encodeSegment(name)}.json`);
  }

  #dataPath(digest: string): string {
    if (!isDigest(digest)) throw new AppError(Code.DATA_LOSS, `corrupt index entry: digest ${JSON.stringify(digest)}`);
    return join(this.#dir, "data", digest.slice("sha256:".length));
  }
}

function checkName(name: string): void {
  if (name.length === 0 || name.length > 200) {
    throw new AppError(Code.INVALID_ARGUMENT, `blob name must be 1-200 characters, got ${name.length}`);
  }
}
