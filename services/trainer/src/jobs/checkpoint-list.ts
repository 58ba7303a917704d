import { fromBinary, toBinary } from "@bufbuild/protobuf";
import type { Bus, KeyValueStore } from "@poseloop/bus";
import { AppError, Code } from "@poseloop/core";
import { ListCheckpointsResponseSchema, type Checkpoint } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { JOBS_BUCKET } from "./job-store.js";

const key = (jobId: string): string => `ckpt.${jobId}`;

/**
 * The checkpoints a job keeps, oldest first: the last K plus the best by validation AP. Older ones are
 * returned by `add` for deletion from the checkpoint store.
 */
export class CheckpointList {
  readonly #kv: KeyValueStore;
  private constructor(kv: KeyValueStore) {
    this.#kv = kv;
  }

  static async open(bus: Bus): Promise<CheckpointList> {
    return new CheckpointList(await bus.keyValueStore(JOBS_BUCKET, { history: 1 }));
  }

  async get(jobId: string): Promise<Checkpoint[]> {
    const entry = await this.#kv.get(key(jobId));
    return entry === undefined ? [] : fromBinary(ListCheckpointsResponseSchema, entry.value).checkpoints;
  }

  /** Records `checkpoint` and returns the ones that fell out of the kept set. */
  async add(jobId: string, checkpoint: Checkpoint, keepLast: number): Promise<Checkpoint[]> {
    for (let attempt = 0; ; attempt++) {
      const entry = await this.#kv.get(key(jobId));
      const list = entry === undefined ? [] : fromBinary(ListCheckpointsResponseSchema, entry.value).checkpoints;
      // A checkpoint rewritten under the same id (a resume that reached the same point) replaces the old entry.
      const all = [...list.filter((c) => c.checkpointId !== checkpoint.checkpointId), checkpoint];
      if (checkpoint.isBest) for (const c of all) c.isBest = c === checkpoint;
      const recent = new Set(all.slice(-Math.max(1, keepLast)));
      const kept = all.filter((c) => recent.has(c) || c.isBest);
      const removed = all.filter((c) => !kept.includes(c) && !list.every((old) => old !== c && old.location === c.location));
      const value = toBinary(ListCheckpointsResponseSchema, { $typeName: "poseloop.trainer.v1.ListCheckpointsResponse", checkpoints: kept });
      try {
        if (entry === undefined) await this.#kv.create(key(jobId), value);
        else await this.#kv.update(key(jobId), value, entry.revision);
        // Each attempt writes its own files, so an entry rewritten under the same id leaves its old file behind.
        const replaced = list.filter((c) => c.checkpointId === checkpoint.checkpointId && c.location !== checkpoint.location);
        return [...replaced, ...removed].filter((c) => c.location !== checkpoint.location);
      } catch (error) {
        if (!AppError.is(error, Code.ABORTED) || attempt > 20) throw error;
      }
    }
  }
}
