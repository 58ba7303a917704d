import { createHash, type Hash } from "node:crypto";

const DIGEST_PATTERN = /^sha256:[0-9a-f]{64}$/;

/** Whether `digest` is "sha256:" followed by 64 lowercase hex digits. */
export function isDigest(digest: string): boolean {
  return DIGEST_PATTERN.test(digest);
}

/** "sha256:<hex>" of `bytes`. */
export function sha256Digest(bytes: Uint8Array): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/** A SHA-256 computed chunk by chunk, as bytes stream past. */
export class DigestAccumulator {
  readonly #hash: Hash = createHash("sha256");
  #size = 0;

  update(chunk: Uint8Array): void {
    this.#hash.update(chunk);
    this.#size += chunk.byteLength;
  }

  get sizeBytes(): number {
    return this.#size;
  }

  /** "sha256:<hex>"; call once, at the end. */
  digest(): string {
    return `sha256:${this.#hash.digest("hex")}`;
  }
}

/** Converts NATS object-store digests ("SHA-256=<base64url>") to ours. */
export function fromNatsDigest(natsDigest: string): string {
  const prefix = "SHA-256=";
  if (!natsDigest.startsWith(prefix)) return natsDigest;
  return `sha256:${Buffer.from(natsDigest.slice(prefix.length), "base64url").toString("hex")}`;
}

/** Yields the chunks of a source, whether a single buffer or a stream. */
export async function* chunksOf(source: Uint8Array | AsyncIterable<Uint8Array>, chunkBytes = 512 * 1024): AsyncGenerator<Uint8Array> {
  if (source instanceof Uint8Array) {
    for (let offset = 0; offset < source.byteLength; offset += chunkBytes) {
      yield source.subarray(offset, Math.min(offset + chunkBytes, source.byteLength));
    }
    return;
  }
  yield* source;
}
