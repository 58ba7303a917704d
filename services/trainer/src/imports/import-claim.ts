import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { KeyValueStore } from "@poseloop/bus";
import { AppError, Code, type Logger } from "@poseloop/core";

/** The bucket of import claims: one key per import (model, bytes, manifest, sets), shared by every trainer. */
export const IMPORTS_BUCKET = "poseloop-imports";
/** A claim whose holder has not written it for this long is taken over: the holder is gone. */
export const DEFAULT_CLAIM_STALE_MS = 30_000;

/** What a claim's value says. "importing" and "publishing" are held; "done" and "failed" are free to take. */
type ClaimState = "importing" | "publishing" | "done" | "failed";

interface ClaimValue {
  readonly state: ClaimState;
  readonly holder: string;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function encode(value: ClaimValue): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

function stateOf(bytes: Uint8Array): ClaimState | undefined {
  try {
    const parsed = JSON.parse(decoder.decode(bytes)) as Partial<ClaimValue>;
    return parsed.state;
  } catch {
    return undefined;
  }
}

/** The claim's key for an import identity (any text that is equal for the same import): a SHA-256 in hex. */
export function importClaimKey(identity: string): string {
  return createHash("sha256").update(identity).digest("hex");
}

/** This trainer's claim on an import was taken over (it stalled longer than the stale time): it must not publish. */
export class LostClaimError extends Error {}

/**
 * An import held by one trainer while it checks and publishes: another trainer asked for the same import meanwhile
 * (a client's retry, two clients) waits for it, then finds the version it published instead of publishing a copy.
 * The holder rewrites the claim every third of the stale time; a claim left unwritten for the stale time is taken
 * over (its trainer died), so nothing waits forever. Staleness is judged on the waiter's own clock (how long the
 * revision it reads stays the same), never by comparing two machines' clocks.
 */
export class ImportClaim {
  #revision: number;
  #lost = false;
  #heartbeat: ReturnType<typeof setInterval>;
  #writing: Promise<void> = Promise.resolve();

  private constructor(
    private readonly kv: KeyValueStore,
    private readonly key: string,
    private readonly holder: string,
    revision: number,
    staleMs: number,
    private readonly logger: Logger,
  ) {
    this.#revision = revision;
    this.#heartbeat = setInterval(() => void this.#write("importing").catch(() => undefined), Math.max(10, Math.floor(staleMs / 3)));
    this.#heartbeat.unref();
  }

  /**
   * The claim on `key`, once no live trainer holds it: taken at once when free, else after its holder lets it
   * go (done or failed) or stops writing it for `staleMs`.
   */
  static async acquire(kv: KeyValueStore, key: string, options: { holder: string; staleMs: number; logger: Logger; signal: AbortSignal }): Promise<ImportClaim> {
    const { holder, staleMs, logger, signal } = options;
    const poll = Math.max(5, Math.min(1000, Math.floor(staleMs / 6)));
    const importing = encode({ state: "importing", holder });
    let seen: { revision: number; since: number } | undefined;
    for (;;) {
      signal.throwIfAborted();
      const entry = await kv.get(key);
      try {
        if (entry === undefined) return new ImportClaim(kv, key, holder, await kv.create(key, importing), staleMs, logger);
        const state = stateOf(entry.value);
        const held = state === "importing" || state === "publishing";
        if (seen?.revision !== entry.revision) seen = { revision: entry.revision, since: Date.now() };
        const stale = Date.now() - seen.since >= staleMs;
        if (!held || stale) {
          if (held) logger.warn("taking over an import claim nobody wrote for the stale time", { key, stale_ms: staleMs });
          return new ImportClaim(kv, key, holder, await kv.update(key, importing, entry.revision), staleMs, logger);
        }
      } catch (error) {
        // Another trainer wrote the claim between our read and our write: read it again.
        if (!AppError.is(error, Code.ABORTED)) throw error;
        continue;
      }
      await sleep(poll, undefined, { signal });
    }
  }

  /** Before publishing: the claim is still this trainer's (else LostClaimError), and says so for longer. */
  async confirm(): Promise<void> {
    await this.#write("publishing");
    if (this.#lost) throw new LostClaimError("another trainer took over this import");
  }

  /** Lets the claim go: "done" (published, or found published) or "failed" (the next request imports). */
  async release(state: "done" | "failed"): Promise<void> {
    clearInterval(this.#heartbeat);
    await this.#write(state).catch((error: unknown) => this.logger.warn("could not release an import claim", { key: this.key, error: String(error) }));
  }

  /** One write at a time, each at the revision the last one left. */
  #write(state: ClaimState): Promise<void> {
    const write = this.#writing.then(async () => {
      if (this.#lost) return;
      try {
        this.#revision = await this.kv.update(this.key, encode({ state, holder: this.holder }), this.#revision);
      } catch (error) {
        if (!AppError.is(error, Code.ABORTED)) throw error;
        this.#lost = true;
        clearInterval(this.#heartbeat);
      }
    });
    this.#writing = write.catch(() => undefined);
    return write;
  }
}
