import { mkdir, readFile, rm } from "node:fs/promises";
import { dirname, isAbsolute, join, relative, resolve } from "node:path";
import { sha256Digest, type BlobStore, type Bus } from "@poseloop/bus";
import { AppError, Code, writeFileAtomic } from "@poseloop/core";

export const CHECKPOINTS_BUCKET = "poseloop-checkpoints";

export interface StoredCheckpoint {
  readonly location: string;
  readonly digest: string;
  readonly sizeBytes: number;
}

/** Where checkpoints live: somewhere every trainer can reach, so another process can resume a job. */
export interface CheckpointStore {
  /**
   * Stores a checkpoint of `jobId`. With `attempt` (the writer's owner epoch) each attempt writes a file of its
   * own, so a stale owner reaching the same checkpoint id never overwrites the current owner's file.
   */
  put(jobId: string, checkpointId: string, bytes: Uint8Array, attempt?: number): Promise<StoredCheckpoint>;
  /** The bytes, verified against `digest`; DATA_LOSS when they differ, NOT_FOUND when gone. */
  get(location: string, digest: string): Promise<Uint8Array>;
  delete(location: string): Promise<void>;
}

function fileName(checkpointId: string, attempt: number | undefined): string {
  return attempt === undefined ? `${checkpointId}.ckpt` : `${checkpointId}.a${attempt}.ckpt`;
}

async function collect(data: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of data) chunks.push(chunk);
  return Buffer.concat(chunks);
}

function verify(bytes: Uint8Array, digest: string, location: string): Uint8Array {
  const actual = sha256Digest(bytes);
  if (actual !== digest) throw new AppError(Code.DATA_LOSS, `checkpoint ${location} is corrupt: digest ${actual}, recorded ${digest}`);
  return bytes;
}

/** Checkpoints in the bus's object store (NATS JetStream, or the embedded bus's folder). */
export class BlobCheckpointStore implements CheckpointStore {
  readonly #blobs: BlobStore;
  private constructor(blobs: BlobStore) {
    this.#blobs = blobs;
  }
  static async open(bus: Bus): Promise<BlobCheckpointStore> {
    return new BlobCheckpointStore(await bus.blobStore(CHECKPOINTS_BUCKET));
  }
  async put(jobId: string, checkpointId: string, bytes: Uint8Array, attempt?: number): Promise<StoredCheckpoint> {
    const location = `${jobId}/${fileName(checkpointId, attempt)}`;
    const info = await this.#blobs.put(location, bytes);
    return { location, digest: info.digest, sizeBytes: info.sizeBytes };
  }
  async get(location: string, digest: string): Promise<Uint8Array> {
    const blob = await this.#blobs.get(location);
    if (blob === undefined) throw new AppError(Code.NOT_FOUND, `checkpoint ${location} is gone from the store`);
    return verify(await collect(blob.data), digest, location);
  }
  async delete(location: string): Promise<void> {
    await this.#blobs.delete(location);
  }
}

/**
 * Checkpoints in a shared folder (a volume every trainer mounts): written to a temporary file, fsynced, then
 * renamed, so a crash leaves either the old set or the complete new file, never a torn one.
 */
export class DirectoryCheckpointStore implements CheckpointStore {
  readonly #root: string;
  constructor(root: string) {
    this.#root = root;
  }
  async put(jobId: string, checkpointId: string, bytes: Uint8Array, attempt?: number): Promise<StoredCheckpoint> {
    const location = join(jobId, fileName(checkpointId, attempt));
    const path = join(this.#root, location);
    await mkdir(dirname(path), { recursive: true });
    await writeFileAtomic(path, bytes);
    return { location, digest: sha256Digest(bytes), sizeBytes: bytes.byteLength };
  }
  async get(location: string, digest: string): Promise<Uint8Array> {
    const path = this.#path(location);
    const bytes = await readFile(path).catch((error: unknown) => {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") throw new AppError(Code.NOT_FOUND, `checkpoint ${location} is gone from ${this.#root}`);
      throw error;
    });
    return verify(bytes, digest, location);
  }
  async delete(location: string): Promise<void> {
    await rm(this.#path(location), { force: true });
  }
  /** The file of a location recorded in a job; one that resolves outside the folder is refused. */
  #path(location: string): string {
    const path = resolve(this.#root, location);
    const inside = relative(resolve(this.#root), path);
    if (inside === "" || inside.startsWith("..") || isAbsolute(inside)) {
      throw new AppError(Code.PERMISSION_DENIED, `checkpoint location ${location} leaves the checkpoint folder`);
    }
    return path;
  }
}
