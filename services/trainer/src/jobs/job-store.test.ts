import { create } from "@bufbuild/protobuf";
import { EmbeddedBus, type Bus, type KeyValueStore } from "@poseloop/bus";
import { AppError, Code } from "@poseloop/core";
import { JobSchema, JobState } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { makeTempDir } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobEventLog, JobStore, newJobId, StaleOwnerError } from "./job-store.js";

describe("JobStore ownership fencing", () => {
  let dir: { path: string; remove: () => Promise<void> };
  let store: JobStore;
  beforeAll(async () => {
    dir = await makeTempDir("poseloop-job-store-");
    store = await JobStore.open(await EmbeddedBus.open(dir.path));
  });
  afterAll(async () => dir.remove());

  it("refuses every write of an owner whose attempt was taken over, and keeps the new owner's record", async () => {
    const jobId = newJobId();
    await store.create(create(JobSchema, { jobId, state: JobState.RUNNING, workerId: "trainer-a", attempt: 1 }));
    const stale = { workerId: "trainer-a", attempt: 1 };
    const events = await JobEventLog.open(store, jobId);
    events.fence(stale);
    await events.append({ case: "warning", value: { code: "before", message: "still the owner" } });
    await store.update(
      jobId,
      (j) => {
        j.bestEpoch = 1;
      },
      stale,
    );

    // trainer-a went silent past its lease; trainer-b took the job over.
    await store.update(jobId, (j) => {
      j.workerId = "trainer-b";
      j.attempt += 1;
    });

    const write = store.update(
      jobId,
      (j) => {
        j.state = JobState.SUCCEEDED;
      },
      stale,
    );
    await expect(write).rejects.toBeInstanceOf(StaleOwnerError);
    await expect(write).rejects.toSatisfy((error: unknown) => AppError.is(error, Code.ABORTED));
    await expect(events.append({ case: "warning", value: { code: "after", message: "no longer the owner" } })).rejects.toBeInstanceOf(StaleOwnerError);
    await expect(store.assertOwner(jobId, stale)).rejects.toThrow(/attempt 2 on trainer-b/);

    const { job } = await store.require(jobId);
    expect(job).toMatchObject({ state: JobState.RUNNING, workerId: "trainer-b", attempt: 2, bestEpoch: 1 });
    expect((await store.events(jobId)).map((e) => (e.event.case === "warning" ? e.event.value.code : e.event.case))).toEqual(["before"]);
    // The current owner writes as before.
    await store.update(
      jobId,
      (j) => {
        j.bestEpoch = 2;
      },
      { workerId: "trainer-b", attempt: 2 },
    );
    expect((await store.require(jobId)).job.bestEpoch).toBe(2);
  });
});

describe("JobStore idempotency keys", () => {
  it("gives the key back when the job record cannot be written, so the client's retry creates the job once", async () => {
    // A failed record write used to leave the key reserved for a job that never existed: every retry got
    // ABORTED "being created; retry", forever.
    const dir = await makeTempDir("poseloop-job-store-idem-");
    try {
      const bus = await EmbeddedBus.open(dir.path);
      let failRecordWrites = 1;
      const flaky = delegate<Bus>(bus, {
        keyValueStore: async (bucket: string, options?: { history?: number }) => {
          const kv = await bus.keyValueStore(bucket, options);
          return delegate<KeyValueStore>(kv, {
            create: async (key: string, value: Uint8Array) => {
              if (key.startsWith("job.") && failRecordWrites-- > 0) throw new AppError(Code.UNAVAILABLE, "bus unavailable");
              return kv.create(key, value);
            },
          });
        },
      });
      const store = await JobStore.open(flaky);
      const first = create(JobSchema, { jobId: newJobId(), state: JobState.QUEUED, idempotencyKey: "submit-1" });
      await expect(store.create(first)).rejects.toSatisfy((error: unknown) => AppError.is(error, Code.UNAVAILABLE));

      const retry = create(JobSchema, { jobId: newJobId(), state: JobState.QUEUED, idempotencyKey: "submit-1" });
      expect(await store.create(retry)).toMatchObject({ existing: false, job: { jobId: retry.jobId } });
      const again = create(JobSchema, { jobId: newJobId(), state: JobState.QUEUED, idempotencyKey: "submit-1" });
      expect(await store.create(again)).toMatchObject({ existing: true, job: { jobId: retry.jobId } });
      expect(await store.get(first.jobId)).toBeUndefined();
    } finally {
      await dir.remove();
    }
  });
});

/** `target` with some methods replaced; the others called on `target` itself (its private fields need it). */
function delegate<T extends object>(target: T, overrides: Partial<T>): T {
  return new Proxy(target, {
    get(object, property) {
      if (property in overrides) return overrides[property as keyof T];
      const value: unknown = Reflect.get(object, property, object);
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(object) : value;
    },
  });
}
