import { createHash, randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { KeyValueStore } from "@poseloop/bus";
import { AppError, Code, type Logger } from "@poseloop/core";

/** The bucket of import claims: one key per import (model, bytes, manifest, sets), shared by every trainer. */
export const IMPORTS_BUCKET = "poseloop-imports";
/**
 * A claim whose holder has not written it for this long is taken over: the holder is gone. Well under a client's
 * default deadline (30 s), so the first request after a trainer died mid-import is the one that takes over.
 */
export const DEFAULT_CLAIM_STALE_MS = 15_000;

/** What a claim's value says. "importing" and "publishing" are held; "done" and "failed" are free to take. */
type ClaimState = "importing" | "publishing" | "done" | "failed";

interface ClaimValue {
  readonly state: ClaimState;
  readonly holder: string;
  /** This holding of the claim: a write whose answer was lost is recognised as this holder's own. */
  readonly token: string;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function encode(value: ClaimValue): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

function decode(bytes: Uint8Array): Partial<ClaimValue> {
  try {
    return JSON.parse(decoder.decode(bytes)) as Partial<ClaimValue>;
  } catch {
    return {};
  }
}

/**
 * When each claim's current revision was first read, on this trainer's clock: a claim is stale once the same
 * revision has been read for the stale time, counted across requests (a client whose deadline ends a wait early
 * must not restart the count), never by comparing two machines' clocks.
 */
export class ClaimSightings {
  readonly #seen = new Map<string, { revision: number; since: number }>();

  /** How long `key` has been at `revision`, as far as this trainer has seen. */
  age(key: string, revision: number): number {
    const seen = this.#seen.get(key);
    if (seen?.revision === revision) return Date.now() - seen.since;
    this.#seen.set(key, { revision, since: Date.now() });
    return 0;
  }

  forget(key: string): void {
    this.#seen.delete(key);
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
 * over (its trainer died), so nothing waits forever.
 */
export class ImportClaim {
  #revision: number;
  #state: ClaimState = "importing";
  #lost = false;
  #heartbeat: ReturnType<typeof setInterval>;
  #writing: Promise<void> = Promise.resolve();

  private constructor(
    private readonly kv: KeyValueStore,
    private readonly key: string,
    private readonly value: { holder: string; token: string },
    revision: number,
    staleMs: number,
    private readonly logger: Logger,
  ) {
    this.#revision = revision;
    this.#heartbeat = setInterval(() => {
      this.#write(this.#state).catch((error: unknown) => this.logger.warn("could not renew an import claim", { key, error: String(error) }));
    }, Math.max(10, Math.floor(staleMs / 3)));
    this.#heartbeat.unref();
  }

  /**
   * The claim on `key`, once no live trainer holds it: taken at once when free, else after its holder lets it
   * go (done or failed) or stops writing it for `staleMs` (as `sightings` has seen it).
   */
  static async acquire(
    kv: KeyValueStore,
    key: string,
    options: { holder: string; staleMs: number; sightings: ClaimSightings; logger: Logger; signal: AbortSignal },
  ): Promise<ImportClaim> {
    const { staleMs, sightings, logger, signal } = options;
    const value = { holder: options.holder, token: randomUUID() };
    const poll = Math.max(5, Math.min(1000, Math.floor(staleMs / 6)));
    const importing = encode({ state: "importing", ...value });
    for (;;) {
      signal.throwIfAborted();
      const entry = await kv.get(key);
      try {
        if (entry === undefined) return new ImportClaim(kv, key, value, await kv.create(key, importing), staleMs, logger);
        const state = decode(entry.value).state;
        const held = state === "importing" || state === "publishing";
        const stale = sightings.age(key, entry.revision) >= staleMs;
        if (!held || stale) {
          if (held) logger.warn("taking over an import claim nobody renewed for the stale time", { key, stale_ms: staleMs });
          const claim = new ImportClaim(kv, key, value, await kv.update(key, importing, entry.revision), staleMs, logger);
          sightings.forget(key);
          return claim;
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
        this.#revision = await this.kv.update(this.key, encode({ state, ...this.value }), this.#revision);
        this.#state = state;
      } catch (error) {
        if (!AppError.is(error, Code.ABORTED)) throw error;
        // A write of ours may have landed with its answer lost: the claim is still ours if it holds our token.
        const entry = await this.kv.get(this.key);
        if (entry !== undefined && decode(entry.value).token === this.value.token) {
          this.#revision = await this.kv.update(this.key, encode({ state, ...this.value }), entry.revision);
          this.#state = state;
          return;
        }
        this.#lost = true;
        clearInterval(this.#heartbeat);
      }
    });
    this.#writing = write.catch(() => undefined);
    return write;
  }
}
