import { create } from "@bufbuild/protobuf";
import { EmbeddedBus } from "@poseloop/bus";
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
