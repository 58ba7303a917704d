import { join } from "node:path";
import { AppError, Code, writeFileAtomic } from "@poseloop/core";
import type { KeyValueStore, KvEntry } from "../types.js";
import { readJson, watchDirectory, withFileLock } from "./fs-util.js";

interface StoredEntry {
  revision: number;
  value: string;
  createdAt: string;
}

interface BucketState {
  revision: number;
  keys: Record<string, StoredEntry[]>;
}

/**
 * A KeyValueStore in one directory: the whole bucket in state.json, replaced atomically under a lock file,
 * so compare-and-set holds across processes. Meant for one machine and modest buckets (serving versions,
 * job records), like the embedded bus it belongs to.
 */
export class FsKeyValueStore implements KeyValueStore {
  readonly #dir: string;
  readonly #history: number;

  constructor(dir: string, history = 64) {
    this.#dir = dir;
    this.#history = history;
  }

  async get(key: string): Promise<KvEntry | undefined> {
    const entries = (await this.#read()).keys[key];
    const last = entries?.at(-1);
    return last === undefined ? undefined : toEntry(key, last);
  }

  create(key: string, value: Uint8Array): Promise<number> {
    return this.#write(key, value, (current) => {
      if (current !== undefined) throw new AppError(Code.ABORTED, `${key} already exists`);
    });
  }

  update(key: string, value: Uint8Array, expectedRevision: number): Promise<number> {
    return this.#write(key, value, (current) => {
      if (current?.revision !== expectedRevision) {
        throw new AppError(Code.ABORTED, `update ${key} at revision ${expectedRevision}: the value changed since it was read (stale revision)`);
      }
    });
  }

  put(key: string, value: Uint8Array): Promise<number> {
    return this.#write(key, value, () => undefined);
  }

  async history(key: string): Promise<KvEntry[]> {
    return ((await this.#read()).keys[key] ?? []).map((entry) => toEntry(key, entry));
  }

  async *watch(key: string, signal: AbortSignal): AsyncGenerator<KvEntry> {
    let seen = 0;
    for await (const _tick of watchDirectory(this.#dir, signal)) {
      const entries = (await this.#read()).keys[key] ?? [];
      const fresh = seen === 0 ? entries.slice(-1) : entries.filter((entry) => entry.revision > seen);
      for (const entry of fresh) {
        seen = entry.revision;
        if (signal.aborted) return;
        yield toEntry(key, entry);
      }
    }
  }

  async keys(prefix = ""): Promise<string[]> {
    const state = await this.#read();
    return Object.keys(state.keys)
      .filter((key) => key.startsWith(prefix) && (state.keys[key]?.length ?? 0) > 0)
      .sort();
  }

  async #read(): Promise<BucketState> {
    return (await readJson<BucketState>(join(this.#dir, "state.json"))) ?? { revision: 0, keys: {} };
  }

  async #write(key: string, value: Uint8Array, check: (current: StoredEntry | undefined) => void): Promise<number> {
    if (key.length === 0) throw new AppError(Code.INVALID_ARGUMENT, "empty key");
    return withFileLock(join(this.#dir, "lock"), async () => {
      const state = await this.#read();
      const entries = state.keys[key] ?? [];
      check(entries.at(-1));
      const revision = state.revision + 1;
      entries.push({ revision, value: Buffer.from(value).toString("base64"), createdAt: new Date().toISOString() });
      state.keys[key] = entries.slice(-this.#history);
      state.revision = revision;
      await writeFileAtomic(join(this.#dir, "state.json"), JSON.stringify(state));
      return revision;
    });
  }
}

function toEntry(key: string, entry: StoredEntry): KvEntry {
  return { key, value: Buffer.from(entry.value, "base64"), revision: entry.revision, createdAt: new Date(entry.createdAt) };
}
