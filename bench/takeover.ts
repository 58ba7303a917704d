import { setMaxListeners } from "node:events";
import { create } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { ModelRegistry, NatsBus } from "@poseloop/bus";
import { createClient, type ClientControls, type ServiceClient } from "@poseloop/grpc";
import { DatasetKind } from "@poseloop/proto/poseloop/common/v1/dataset_pb";
import { Architecture, OptimizerKind, PublishMode, ScheduleKind, TrainConfigSchema, type TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { JobState, TrainerService, type JobEvent } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { makeTempDir, NatsServer, spawnService, waitFor, type ServiceProcess } from "@poseloop/testkit";
import { resolveTrainConfig } from "@poseloop/trainer";
import { fmt, median, printTable } from "./harness.js";

/**
 * Takeover after a crash: 3 trainer processes with the default settings on a fresh nats-server, N jobs
 * submitted at once (each publishes a model of its own), then trainers killed with SIGKILL while they run a job
 * (a replacement started each time, so 3 keep running). Per kill: seconds from the SIGKILL to the job's RUNNING
 * state change on another trainer, and to its first progress report there. The peer: the previous default lease
 * (POSELOOP_JOB_ACK_WAIT=60s), one kill, measured in the same run. At the end, exactly-once: every job SUCCEEDED
 * once and published exactly one version. POSELOOP_BENCH_QUICK=1: 6 jobs, 1 kill, no peer.
 */
const TRAINER = "services/trainer/src/main.ts";
const TRAINERS = 3;

type TrainerClient = ServiceClient<(typeof TrainerService)["method"]> & ClientControls;

interface Trainer {
  readonly id: string;
  readonly process: ServiceProcess;
}

interface Kill {
  readonly trainer: string;
  readonly jobId: string;
  readonly takenBy: string;
  /** Seconds from the SIGKILL to the RUNNING state change of the new attempt. */
  readonly toRunning: number;
  /** Seconds from the SIGKILL to the new attempt's first progress report. */
  readonly toProgress: number;
}

interface ExactlyOnce {
  readonly jobs: number;
  readonly succeeded: number;
  /** Jobs with more than one SUCCEEDED state change. */
  readonly endedTwice: number;
  /** Jobs whose model has exactly one registry version, one publication event and one `published` entry. */
  readonly publishedOnce: number;
  readonly versions: number;
  readonly publicationEvents: number;
  readonly takeovers: number;
}

interface Scenario {
  readonly label: string;
  readonly kills: readonly Kill[];
  readonly exactlyOnce: ExactlyOnce;
  /** Seconds from a first attempt's RUNNING to its first progress: what any job start costs, crash or not. */
  readonly freshStarts: readonly number[];
  readonly wallSeconds: number;
}

/** A few seconds of training on 2 cores: 2 epochs of 10 steps, a checkpoint after each, then a publication. */
function jobConfig(modelName: string, seed: number): TrainConfig {
  const { config, problems } = resolveTrainConfig(
    create(TrainConfigSchema, {
      name: modelName,
      model: { architecture: Architecture.LITE, inputSize: { width: 48, height: 64 }, extra: { case: "lite", value: { channels: [8, 16, 32] } } },
      data: { kind: DatasetKind.SYNTHETIC, synthetic: { trainImages: 80, valImages: 8, imageWidth: 128, imageHeight: 96, maxPeople: 1, seed: BigInt(seed) }, name: `takeover-${seed}` },
      optimizer: { kind: OptimizerKind.ADAM, lr: 1e-3 },
      schedule: { kind: ScheduleKind.CONSTANT },
      batchSize: 8,
      endEpoch: 2,
      seed: 3n,
      logEverySteps: 2,
      loaderWorkers: 0,
      intraOpThreads: 1,
      publish: { mode: PublishMode.BEST, modelName },
      quantization: { enabled: false },
      validation: { useGtBoxes: true },
    }),
  );
  if (config === undefined || problems.length > 0) throw new Error(`takeover bench config: ${problems.join("; ")}`);
  return config;
}

const stateChanges = (events: readonly JobEvent[]) => events.flatMap((e) => (e.event.case === "stateChanged" ? [{ sequence: e.sequence, at: e.time === undefined ? 0 : timestampMs(e.time), ...e.event.value }] : []));

async function scenario(label: string, options: { jobs: number; kills: number; ackWait?: string }): Promise<Scenario> {
  const started = performance.now();
  const nats = await NatsServer.start();
  const dir = await makeTempDir("poseloop-bench-takeover-");
  const trainers = new Map<string, Trainer>();
  const clients: TrainerClient[] = [];
  const apis: ServiceProcess[] = [];
  let spawned = 0;
  const spawn = async (jobs: number): Promise<Trainer> => {
    const id = `${jobs === 0 ? "api" : "trainer"}-${++spawned}`;
    const process = await spawnService(
      TRAINER,
      {
        POSELOOP_TRAINER_LISTEN: "127.0.0.1:0",
        POSELOOP_NATS_URL: nats.url,
        POSELOOP_DATA_ROOT: dir.path,
        POSELOOP_WORK_DIR: dir.path,
        POSELOOP_WORKER_ID: id,
        POSELOOP_MAX_CONCURRENT_JOBS: String(jobs),
        POSELOOP_LOG_LEVEL: "info", // spawnService waits for the "listening" line
        POSELOOP_DRAIN_TIMEOUT: "2s",
        ...(options.ackWait === undefined ? {} : { POSELOOP_JOB_ACK_WAIT: options.ackWait }),
      },
      90_000,
    );
    const trainer = { id, process };
    if (jobs > 0) trainers.set(id, trainer);
    else apis.push(process);
    return trainer;
  };
  const bus = await NatsBus.connect({ servers: nats.url, name: "bench-takeover" });
  try {
    // Submissions and watches go through a trainer that runs no jobs: it is never killed.
    const api = await spawn(0);
    const client: TrainerClient = createClient(TrainerService, `127.0.0.1:${api.process.port}`);
    clients.push(client);
    await Promise.all(Array.from({ length: TRAINERS }, () => spawn(1)));

    const names = Array.from({ length: options.jobs }, (_, i) => `takeover-${i}`);
    const jobIds = await Promise.all(names.map(async (name, i) => (await client.startTraining({ source: { case: "config", value: jobConfig(name, i + 1) } })).job?.jobId ?? ""));
    const events = new Map<string, JobEvent[]>(jobIds.map((id) => [id, []]));
    const watchSignal = AbortSignal.timeout(30 * 60_000);
    setMaxListeners(options.jobs + 10, watchSignal);
    const watches = jobIds.map(async (jobId) => {
      const seen = events.get(jobId) ?? [];
      for await (const r of client.watchJob({ jobId }, { signal: watchSignal })) if (r.event !== undefined) seen.push(r.event);
    });
    const ended = (jobId: string) => stateChanges(events.get(jobId) ?? []).some((c) => c.to !== JobState.RUNNING && c.to !== JobState.QUEUED);

    const kills: Kill[] = [];
    let tries = 0;
    while (kills.length < options.kills && tries++ < options.kills * 4) {
      // A job in its second epoch (past its first checkpoint), so that the new owner resumes from a checkpoint;
      // each kill another job's trainer.
      const victim = await waitFor(
        () => jobIds.find((id) => !ended(id) && !kills.some((k) => k.jobId === id) && (events.get(id) ?? []).some((e) => e.event.case === "progress" && e.event.value.epoch >= 1)),
        { timeoutMs: 10 * 60_000, intervalMs: 50, what: "a job in its second epoch" },
      );
      const owner = (await client.getJob({ jobId: victim })).job?.workerId ?? "";
      const trainer = trainers.get(owner);
      if (trainer === undefined) continue;
      const killedAt = Date.now();
      await trainer.process.stop("SIGKILL");
      trainers.delete(owner);
      const replacement = spawn(1);
      // What the killed trainer ran when it died (its job may have ended between the look and the kill).
      const orphans = (await client.listJobs({ states: [JobState.RUNNING], pageSize: 500 })).jobs.filter((j) => j.workerId === owner);
      const orphan = orphans[0]?.jobId;
      if (orphan === undefined) {
        await replacement;
        continue;
      }
      const takeover = await waitFor(
        () => {
          const seen = events.get(orphan) ?? [];
          const running = stateChanges(seen).find((c) => c.to === JobState.RUNNING && c.at >= killedAt);
          const progress = running === undefined ? undefined : seen.find((e) => e.sequence > running.sequence && e.event.case === "progress");
          return running === undefined || progress?.time === undefined ? undefined : { running, progressAt: timestampMs(progress.time) };
        },
        { timeoutMs: 5 * 60_000, intervalMs: 50, what: `the takeover of ${orphan}` },
      );
      await replacement;
      const takenBy = (await client.getJob({ jobId: orphan })).job?.workerId ?? "";
      kills.push({ trainer: owner, jobId: orphan, takenBy, toRunning: (takeover.running.at - killedAt) / 1000, toProgress: (takeover.progressAt - killedAt) / 1000 });
      process.stdout.write(`${label}: killed ${owner} running ${orphan}; ${takenBy} ran it ${fmt(kills.at(-1)?.toRunning ?? 0, 1)} s later\n`);
    }
    await Promise.all(watches);

    const registry = await ModelRegistry.open(bus);
    let succeeded = 0;
    let endedTwice = 0;
    let publishedOnce = 0;
    let versions = 0;
    let publicationEvents = 0;
    let takeovers = 0;
    const freshStarts: number[] = [];
    for (const [i, jobId] of jobIds.entries()) {
      const seen = events.get(jobId) ?? [];
      const changes = stateChanges(seen);
      const successes = changes.filter((c) => c.to === JobState.SUCCEEDED).length;
      const { job } = await client.getJob({ jobId });
      const listed = (await registry.listVersions(names[i] ?? "")).length;
      const published = seen.filter((e) => e.event.case === "published").length;
      if (job?.state === JobState.SUCCEEDED) succeeded++;
      if (successes > 1) endedTwice++;
      if (listed === 1 && published === 1 && job?.published.length === 1) publishedOnce++;
      versions += listed;
      publicationEvents += published;
      takeovers += changes.filter((c) => c.to === JobState.RUNNING && c.reason.startsWith("taken over")).length;
      const first = changes.find((c) => c.to === JobState.RUNNING && c.reason === "started");
      const progress = first === undefined ? undefined : seen.find((e) => e.sequence > first.sequence && e.event.case === "progress");
      if (first !== undefined && progress?.time !== undefined) freshStarts.push((timestampMs(progress.time) - first.at) / 1000);
    }
    return { label, kills, exactlyOnce: { jobs: jobIds.length, succeeded, endedTwice, publishedOnce, versions, publicationEvents, takeovers }, freshStarts, wallSeconds: (performance.now() - started) / 1000 };
  } finally {
    for (const c of clients) c.$close();
    await Promise.all([...[...trainers.values()].map((t) => t.process), ...apis].map((p) => p.stop("SIGKILL")));
    await bus.close();
    await nats.dispose();
    await dir.remove();
  }
}

export async function run(): Promise<void> {
  if (process.env["POSELOOP_JOB_ACK_WAIT"] !== undefined) throw new Error("unset POSELOOP_JOB_ACK_WAIT: this benchmark measures the default lease");
  const quick = process.env["POSELOOP_BENCH_QUICK"] === "1";
  const jobs = quick ? 6 : 20;
  const scenarios = [await scenario("default", { jobs, kills: quick ? 1 : 3 })];
  if (!quick) scenarios.push(await scenario("60s (previous default)", { jobs: 6, kills: 1, ackWait: "60s" }));

  printTable(
    `trainer takeover after SIGKILL (${TRAINERS} trainers, max 1 job each; seconds from the kill)`,
    ["lease", "kill", "killed", "job", "taken by", "to RUNNING s", "to first progress s"],
    scenarios.flatMap((s) => s.kills.map((k, i) => [s.label, String(i + 1), k.trainer, k.jobId, k.takenBy, fmt(k.toRunning, 2), fmt(k.toProgress, 2)])),
  );
  const [ours, peer] = scenarios;
  const summary = (s: Scenario | undefined) => {
    const running = s?.kills.map((k) => k.toRunning) ?? [];
    const progress = s?.kills.map((k) => k.toProgress) ?? [];
    return { running: median(running), runningMax: Math.max(...running), progress: median(progress), progressMax: Math.max(...progress) };
  };
  const a = summary(ours);
  const b = summary(peer);
  printTable(
    "takeover: median and max (goal: under 10 s with the default settings); a fresh job start: a first attempt's RUNNING to its first progress, uninterrupted",
    ["lease", "kills", "median to RUNNING s", "max to RUNNING s", "median to progress s", "max to progress s", "fresh job start s (median)", "peer / this (median to RUNNING)"],
    scenarios.map((s) => {
      const m = summary(s);
      return [s.label, String(s.kills.length), fmt(m.running, 2), fmt(m.runningMax, 2), fmt(m.progress, 2), fmt(m.progressMax, 2), fmt(median(s.freshStarts), 2), s === ours && peer !== undefined ? fmt(b.running / a.running, 1) : "-"];
    }),
  );
  printTable(
    "exactly-once",
    ["lease", "jobs", "SUCCEEDED", "published exactly once", "ended twice", "registry versions", "publication events", "takeovers", "wall s"],
    scenarios.map((s) => {
      const e = s.exactlyOnce;
      return [s.label, String(e.jobs), String(e.succeeded), String(e.publishedOnce), String(e.endedTwice), String(e.versions), String(e.publicationEvents), String(e.takeovers), fmt(s.wallSeconds, 0)];
    }),
  );
}
