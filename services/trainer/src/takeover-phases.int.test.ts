import { once } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import { ModelRegistry, NatsBus, type Bus } from "@poseloop/bus";
import { createClient } from "@poseloop/grpc";
import type { ModelManifest } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { PublishMode } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { JobState, TrainerService, type Checkpoint, type Job, type JobEvent } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { NatsServer, makeTempDir, spawnService, waitFor, type ServiceProcess } from "@poseloop/testkit";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { CrashPhase } from "./config.js";
import { BlobCheckpointStore } from "./jobs/checkpoint-store.js";
import { decodeCheckpoint } from "./runner/checkpoint-file.js";
import { jobEvents, startTrainerHarness, type TrainerClient } from "./testing/harness.js";
import { tinyTrainConfig } from "./testing/tiny-config.js";

// A nats-server of this file's own: every trainer on it consumes the one training queue.
const nats = await NatsServer.start();
afterAll(async () => nats.dispose());

const TRAINER = "services/trainer/src/main.ts";
/** Short: B takes the dead trainer's job over a few seconds after its last heartbeat. */
const ACK_WAIT = "3s";
/**
 * Every trainer here runs these onnxruntime jobs only: no PyTorch engine probe (a python importing torch, seconds
 * of CPU on a small machine, for nothing).
 */
const NO_PYTORCH = { POSELOOP_PYTHON: "/bin/false" };

/** The smallest run that validates twice and publishes: 5 micro-batches an epoch, 2 epochs. */
function takeoverConfig(modelName: string) {
  return tinyTrainConfig({ name: "takeover", endEpoch: 2, publish: { mode: PublishMode.BEST, modelName } });
}

/** What an uninterrupted run and a crashed-and-taken-over run must agree on, byte for byte. */
interface RunOutcome {
  readonly job: Job;
  readonly events: JobEvent[];
  readonly checkpoints: Checkpoint[];
  /** The final checkpoint's training state (weights, optimizer, RNG). */
  readonly finalState: Buffer;
  readonly versions: string[];
  readonly manifest: ModelManifest;
}

let bus: Bus;
let store: BlobCheckpointStore;
let registry: ModelRegistry;
let dir: { path: string; remove: () => Promise<void> };
let reference: RunOutcome;

async function outcomeOf(client: TrainerClient, jobId: string, events: JobEvent[], modelName: string): Promise<RunOutcome> {
  const { job } = await client.getJob({ jobId });
  if (job === undefined) throw new Error(`job ${jobId} is gone`);
  const { checkpoints } = await client.listCheckpoints({ jobId });
  const last = checkpoints.at(-1);
  if (last === undefined) throw new Error(`job ${jobId} keeps no checkpoint`);
  const finalState = Buffer.from(decodeCheckpoint(await store.get(last.location, last.digest)).state);
  const versions = await registry.listVersions(modelName);
  const manifest = await registry.getManifest(modelName, versions.at(-1) ?? "");
  return { job, events, checkpoints, finalState, versions, manifest };
}

/** The published files by name (a version's object names include the model name and version). */
function artifactDigests(manifest: ModelManifest): Record<string, string> {
  return Object.fromEntries(manifest.artifacts.map((a) => [a.objectName.split("/").at(-1) ?? "", a.digest]));
}

const stateChanges = (events: JobEvent[]) => events.flatMap((e) => (e.event.case === "stateChanged" ? [e.event.value] : []));
const publications = (events: JobEvent[]) => events.filter((e) => e.event.case === "published");
const savedIds = (events: JobEvent[]) => events.flatMap((e) => (e.event.case === "checkpointSaved" ? [e.event.value.checkpoint?.checkpointId] : []));

beforeAll(async () => {
  dir = await makeTempDir("poseloop-takeover-");
  bus = await NatsBus.connect({ servers: nats.url, name: "takeover-observer" });
  store = await BlobCheckpointStore.open(bus);
  registry = await ModelRegistry.open(bus);
  // One uninterrupted run of the config, shared by every case; its trainer stops before they start, so it
  // never takes their jobs.
  const harness = await startTrainerHarness(nats.url, dir.path, { ...NO_PYTORCH, POSELOOP_JOB_ACK_WAIT: ACK_WAIT, POSELOOP_WORKER_ID: "trainer-reference" });
  try {
    const { job } = await harness.client.startTraining({ source: { case: "config", value: takeoverConfig("takeover-reference") } });
    const jobId = job?.jobId ?? "";
    const events = await jobEvents(harness.client, jobId, { skipProgress: true });
    reference = await outcomeOf(harness.client, jobId, events, "takeover-reference");
  } finally {
    await harness.close();
  }
  expect(reference.job.state, reference.job.error?.message).toBe(JobState.SUCCEEDED);
  expect(reference.versions).toHaveLength(1);
}, 120_000);

afterAll(async () => {
  await bus?.close();
  await dir?.remove();
});

describe("job takeover: a trainer killed at each phase while a second trainer is already running", () => {
  const running: ServiceProcess[] = [];
  afterEach(async () => {
    await Promise.all(running.splice(0).map((service) => service.stop("SIGKILL")));
  });

  async function trainer(id: string, env: Record<string, string> = {}): Promise<{ process: ServiceProcess; client: TrainerClient }> {
    const process = await spawnService(TRAINER, {
      POSELOOP_TRAINER_LISTEN: "127.0.0.1:0",
      POSELOOP_NATS_URL: nats.url,
      POSELOOP_DATA_ROOT: dir.path,
      POSELOOP_WORK_DIR: dir.path,
      POSELOOP_WORKER_ID: id,
      POSELOOP_JOB_ACK_WAIT: ACK_WAIT,
      POSELOOP_LOG_LEVEL: "info",
      POSELOOP_DRAIN_TIMEOUT: "1s",
      ...NO_PYTORCH,
      ...env,
    });
    running.push(process);
    return { process, client: createClient(TrainerService, `127.0.0.1:${process.port}`) };
  }

  // checkpoint-write:2 is the last epoch's checkpoint: recorded in the job, not yet in its list of checkpoints,
  // so the run resumes at its end and publishes by what the list says is best.
  const cases: { phase: CrashPhase; crashAt: string }[] = [
    { phase: "checkpoint-write", crashAt: "checkpoint-write:2" },
    { phase: "after-publish", crashAt: "after-publish" },
  ];

  it.each(cases)("$crashAt: exactly one version, and the same checkpoints and artifacts as an uninterrupted run", async ({ phase, crashAt }) => {
    const modelName = `takeover-${phase}`;
    const [a, b] = await Promise.all([trainer("trainer-a", { POSELOOP_CRASH_AT: crashAt }), trainer("trainer-b")]);
    const died = once(a.process.child, "exit") as Promise<[number | null, NodeJS.Signals | null]>;
    // Both consume the queue. B is suspended while the job is queued, past its pull request's 1 s expiry on the
    // server, so that A takes the job; it goes on long before A gets to its crash point.
    b.process.child.kill("SIGSTOP");
    await sleep(2_000);
    const { job } = await a.client.startTraining({ source: { case: "config", value: takeoverConfig(modelName) } });
    const jobId = job?.jobId ?? "";
    await waitFor(async () => (await a.client.getJob({ jobId })).job?.state === JobState.RUNNING, { timeoutMs: 20_000, intervalMs: 100, what: "trainer A running the job" });
    b.process.child.kill("SIGCONT");
    const { job: started } = await a.client.getJob({ jobId });
    expect(started?.workerId).toBe("trainer-a");
    expect(a.process.child.signalCode, "trainer A died before trainer B went on").toBeNull();

    const [, signal] = await died;
    expect(signal).toBe("SIGKILL");
    expect(a.process.logs.at(-1)).toMatchObject({ msg: "POSELOOP_CRASH_AT: killing this process", phase });

    const events = await jobEvents(b.client, jobId, { skipProgress: true, timeoutMs: 60_000 });
    const crashed = await outcomeOf(b.client, jobId, events, modelName);
    expect(crashed.job.state, crashed.job.error?.message).toBe(JobState.SUCCEEDED);
    expect(crashed.job.attempt).toBe(2);
    expect(crashed.job.workerId).toBe("trainer-b");
    const changes = stateChanges(events);
    expect(changes.map((c) => JobState[c.to])).toEqual(["QUEUED", "RUNNING", "RUNNING", "SUCCEEDED"]);
    expect(changes[1]?.reason).toBe("started");
    expect(changes[2]?.reason).toMatch(/^taken over from trainer-a/);

    // Exactly one version: in the registry, in the job's record and in its events.
    expect(crashed.versions).toHaveLength(1);
    expect(crashed.job.published.map((p) => p.version)).toEqual(crashed.versions);
    expect(publications(events)).toHaveLength(1);
    // One promotion decision too, whichever trainer made it, carried by the one publication event.
    const decisions = await registry.decisions(modelName);
    expect(decisions.map((d) => d.candidate?.version)).toEqual(crashed.versions);
    const publication = publications(events)[0]?.event;
    expect(publication?.case === "published" ? publication.value.decision?.reason : undefined).toBe(decisions[0]?.reason);
    expect(crashed.manifest.trainingJobId).toBe(jobId);
    // Each checkpoint reported once, as in the uninterrupted run (the one A died listing is reported by B).
    expect(savedIds(events)).toEqual(savedIds(reference.events));

    // The same run as if nothing had happened: the checkpoints kept, the final state, what was published.
    const kept = (outcome: RunOutcome) => outcome.checkpoints.map((c) => ({ id: c.checkpointId, epoch: c.epoch, isBest: c.isBest }));
    expect(kept(crashed)).toEqual(kept(reference));
    expect(crashed.finalState.byteLength).toBe(reference.finalState.byteLength);
    expect(Buffer.compare(crashed.finalState, reference.finalState), "final checkpoint state differs from the uninterrupted run's").toBe(0);
    expect(crashed.manifest.labels["checkpoint"]).toBe(reference.manifest.labels["checkpoint"]);
    expect(artifactDigests(crashed.manifest)).toEqual(artifactDigests(reference.manifest));
    expect(crashed.manifest.metrics).toEqual(reference.manifest.metrics);
  }, 90_000);
});
