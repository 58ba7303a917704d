import { createHash, randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, rename, stat, unlink, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { AppError, Code, sleep, writeFileAtomic } from "@poseloop/core";
import { DEFAULT_MAX_DELIVERIES, type JobDelivery, type JobQueue } from "../types.js";

interface StoredJob {
  id: string;
  data: string;
  headers: Record<string, string>;
  deliveryCount: number;
}

/** mtime of files waiting in pending/: far in the future, so that a just-claimed file never looks expired. */
const NOT_LEASED = new Date("2999-01-01T00:00:00Z");
const DEDUP_WINDOW_MS = 10 * 60_000;

/**
 * A JobQueue in a directory shared by the processes of one machine. A job is a file: waiting in pending/,
 * claimed by renaming it into leased/ (rename is atomic, so exactly one consumer wins), its lease expiry kept
 * as the file's mtime. Heartbeats push the expiry forward; an expired lease is moved back to pending/ by
 * whichever consumer looks next, so a job whose consumer died is delivered again.
 */
export class FsJobQueue implements JobQueue {
  readonly ackWaitMs: number;
  readonly maxDeliveries: number;
  readonly #dir: string;
  #sequence = 0;

  // The same default lease as NatsJobQueue's (and the trainer's POSELOOP_JOB_ACK_WAIT).
  constructor(dir: string, ackWaitMs = 6_000, maxDeliveries = DEFAULT_MAX_DELIVERIES) {
    if (!Number.isInteger(maxDeliveries) || maxDeliveries < 1) throw new AppError(Code.INVALID_ARGUMENT, `maxDeliveries must be a positive integer, not ${maxDeliveries}`);
    this.#dir = dir;
    this.ackWaitMs = ackWaitMs;
    this.maxDeliveries = maxDeliveries;
  }

  async enqueue(job: { id: string; data: Uint8Array; headers?: Readonly<Record<string, string>>; dedupId?: string }): Promise<void> {
    await this.#ensureDirs();
    const dedupPath = join(this.#dir, "dedup", createHash("sha256").update(job.dedupId ?? job.id).digest("hex"));
    const seen = await stat(dedupPath).catch(() => undefined);
    if (seen !== undefined && Date.now() - seen.mtimeMs < DEDUP_WINDOW_MS) return;
    await writeFile(dedupPath, "");
    const stored: StoredJob = { id: job.id, data: Buffer.from(job.data).toString("base64"), headers: { ...job.headers }, deliveryCount: 0 };
    const order = `${Date.now().toString().padStart(15, "0")}-${String(this.#sequence++).padStart(6, "0")}-${randomBytes(4).toString("hex")}`;
    await writeFileAtomic(join(this.#dir, "pending", `${order}.json`), JSON.stringify(stored), { mtime: NOT_LEASED });
  }

  async next(options: { waitMs: number; signal?: AbortSignal }): Promise<JobDelivery | undefined> {
    await this.#ensureDirs();
    const deadline = Date.now() + options.waitMs;
    for (;;) {
      if (options.signal?.aborted === true) return undefined;
      await this.#reclaimExpired();
      const delivery = await this.#claimOne();
      if (delivery !== undefined) return delivery;
      if (Date.now() >= deadline) return undefined;
      await sleep(Math.min(50, Math.max(1, deadline - Date.now())), options.signal).catch(() => undefined);
    }
  }

  async #claimOne(): Promise<JobDelivery | undefined> {
    const pending = (await readdir(join(this.#dir, "pending"))).filter((name) => name.endsWith(".json")).sort();
    for (const file of pending) {
      const leased = join(this.#dir, "leased", file);
      try {
        await rename(join(this.#dir, "pending", file), leased);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") continue; // another consumer won it
        throw error;
      }
      const stored = JSON.parse(await readFile(leased, "utf8")) as StoredJob;
      if (stored.deliveryCount >= this.maxDeliveries) {
        // Its last delivery ran out (nak, or a consumer that died): like JetStream's max_deliver, never again.
        await mkdir(join(this.#dir, "dead"), { recursive: true });
        await rename(leased, join(this.#dir, "dead", file)).catch(() => undefined);
        continue;
      }
      stored.deliveryCount += 1;
      await writeFileAtomic(leased, JSON.stringify(stored), { mtime: new Date(Date.now() + this.ackWaitMs) });
      return this.#delivery(file, stored);
    }
    return undefined;
  }

  async #reclaimExpired(): Promise<void> {
    const leasedDir = join(this.#dir, "leased");
    for (const file of await readdir(leasedDir)) {
      if (!file.endsWith(".json")) continue;
      const path = join(leasedDir, file);
      const info = await stat(path).catch(() => undefined);
      if (info === undefined || info.mtimeMs > Date.now()) continue;
      try {
        await utimes(path, NOT_LEASED, NOT_LEASED);
        await rename(path, join(this.#dir, "pending", file));
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
      }
    }
  }

  #delivery(file: string, stored: StoredJob): JobDelivery {
    const leased = join(this.#dir, "leased", file);
    const lost = (what: string) => (error: unknown): never => {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") {
        throw new AppError(Code.ABORTED, `cannot ${what} job ${stored.id}: its lease expired and it was redelivered`, { cause: error });
      }
      throw AppError.from(error);
    };
    return {
      id: stored.id,
      data: Buffer.from(stored.data, "base64"),
      headers: stored.headers,
      deliveryCount: stored.deliveryCount,
      ack: () => unlink(leased).catch(lost("ack")),
      nak: async (delayMs = 0) => {
        // Expire the lease after the delay; the next consumer to look moves it back to pending/.
        const at = new Date(Date.now() + delayMs);
        await utimes(leased, at, at).catch(lost("nak"));
      },
      heartbeat: async () => {
        const at = new Date(Date.now() + this.ackWaitMs);
        await utimes(leased, at, at).catch(lost("heartbeat"));
      },
      term: async () => {
        await mkdir(join(this.#dir, "dead"), { recursive: true });
        await rename(leased, join(this.#dir, "dead", file)).catch(lost("terminate"));
      },
    };
  }

  async #ensureDirs(): Promise<void> {
    for (const sub of ["pending", "leased", "dedup"]) await mkdir(join(this.#dir, sub), { recursive: true });
  }
}
