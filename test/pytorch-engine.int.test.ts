import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { tinyExperiment } from "@poseloop/cli/testing";
import { childProcesses, makeTempDir, NatsServer, spawnService, waitFor, type ServiceProcess } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliSession, jsonLines } from "./cli-session.js";

// A job trained by the PyTorch engine goes the way every job goes: the trainer and the inferencer as separate
// processes on a NATS server of this file's own, the CLI driving them. The engine is Debian's torch on the
// CPU (CI installs python3-torch; POSELOOP_PYTHON names it there, the trainer finds it here otherwise).
const TRAINER = "services/trainer/src/main.ts";
const INFERENCER = "services/inferencer/src/main.ts";
const model = `torch-${process.pid}`;

let nats: NatsServer;
let dir: { path: string; remove: () => Promise<void> };
let trainer: ServiceProcess | undefined;
let inferencer: ServiceProcess | undefined;
let env: Record<string, string>;

const cli = cliSession(() => ({ env, cwd: dir.path }));

interface TrainLine {
  type: string;
  job?: { jobId: string; state: string; attempt?: number };
  event?: {
    progress?: { engine?: string; loss?: number };
    validation?: { metrics?: { ap?: number } };
    published?: { manifest: { model: { name: string; version: string } }; promoted?: boolean };
    stateChanged?: { to?: string; reason?: string };
  };
}

/** The PyTorch engine processes the trainer runs now. */
const engineProcesses = (): number[] => childProcesses(trainer?.child.pid ?? -1, "poseloop_torch");

beforeAll(async () => {
  [nats, dir] = await Promise.all([NatsServer.start(), makeTempDir("poseloop-torch-")]);
  await writeFile(join(dir.path, "tiny.yaml"), tinyExperiment(model, "torch-tiny"));
  const common = { POSELOOP_NATS_URL: nats.url, POSELOOP_LOG_LEVEL: "info", POSELOOP_DRAIN_TIMEOUT: "2s" };
  [trainer, inferencer] = await Promise.all([
    spawnService(TRAINER, { ...common, POSELOOP_TRAINER_LISTEN: "127.0.0.1:0", POSELOOP_DATA_ROOT: join(dir.path, "data"), POSELOOP_WORK_DIR: join(dir.path, "work"), POSELOOP_JOB_ACK_WAIT: "5s" }, 90_000),
    spawnService(INFERENCER, { ...common, POSELOOP_INFERENCER_LISTEN: "127.0.0.1:0", POSELOOP_MODEL: model }, 90_000),
  ]);
  env = { POSELOOP_TRAINER_ADDR: `127.0.0.1:${trainer.port}`, POSELOOP_INFERENCER_ADDR: `127.0.0.1:${inferencer.port}` };
}, 180_000);

afterAll(async () => {
  await Promise.all([trainer?.stop("SIGKILL"), inferencer?.stop("SIGKILL")]);
  await nats?.dispose();
  await dir?.remove();
});

describe("TRAIN.ENGINE: pytorch", () => {
  it("trains, validates through the serving pipeline, publishes an int8 model, and the inferencer serves it", async () => {
    const training = await cli(["train", "--cfg", "tiny.yaml", "--set", "TRAIN.ENGINE=pytorch", "--json"]);
    expect(training.stderr).toBe("");
    expect(training.code).toBe(0);
    const lines = jsonLines<TrainLine>(training.stdout);
    const engines = new Set(lines.flatMap((line) => (line.event?.progress?.engine === undefined ? [] : [line.event.progress.engine])));
    expect([...engines]).toEqual([expect.stringMatching(/^pytorch \d+\.\d+\S* on cpu$/) as string]);
    const aps = lines.flatMap((line) => (line.event?.validation?.metrics?.ap === undefined ? [] : [line.event.validation.metrics.ap]));
    expect(aps.length).toBe(2);
    const publication = lines.find((line) => line.event?.published !== undefined)?.event?.published;
    expect(publication).toMatchObject({ promoted: true, manifest: { model: { name: model } } });
    expect(lines.at(-1)).toMatchObject({ type: "finished", job: { state: "JOB_STATE_SUCCEEDED" } });
    const version = publication?.manifest.model.version ?? "";

    // The inferencer loads a published version on its own; the stream starts once it serves.
    await waitFor(
      async () => {
        const models = await cli(["models", "--json"]);
        const serving = models.code === 0 ? (JSON.parse(models.stdout) as { serving: { manifest?: { model?: { version?: string } } } }).serving : undefined;
        return serving?.manifest?.model?.version === version;
      },
      { timeoutMs: 30_000, intervalMs: 200, what: `${model}@${version} serving` },
    );
    const stream = await cli(["stream", "--synthetic", "--frames", "6", "--width", "160", "--height", "120", "--json"]);
    expect(stream.code).toBe(0);
    const results = jsonLines<{ type: string; result?: { model?: { version?: string }; status?: { code?: number }; persons?: { keypoints?: unknown[] }[] } }>(stream.stdout).flatMap((line) =>
      line.type === "result" && line.result !== undefined ? [line.result] : [],
    );
    expect(results).toHaveLength(6);
    for (const result of results) {
      expect(result.model?.version).toBe(version);
      expect(result.status?.code ?? 0).toBe(0);
      expect(result.persons?.[0]?.keypoints).toHaveLength(17);
    }
  });

  it("resumes a job whose engine process was killed (SIGKILL) from its last checkpoint, and it succeeds", async () => {
    const started = await cli([
      "train", "--cfg", "tiny.yaml", "--set", "TRAIN.ENGINE=pytorch", "--set", "TRAIN.END_EPOCH=4", "--set", "DATASET.SYNTHETIC.TRAIN_IMAGES=160",
      "--set", "PUBLISH.MODEL_NAME=" + `${model}-killed`, "--detach", "--json",
    ]);
    expect(started.code).toBe(0);
    const jobId = (JSON.parse(started.stdout) as { job?: { jobId?: string } }).job?.jobId ?? "";
    expect(jobId).not.toBe("");
    // Once a checkpoint exists (the end of epoch 0), the engine is killed as the OOM killer would.
    await waitFor(
      async () => {
        const listed = await cli(["checkpoints", jobId, "--json"]);
        return listed.code === 0 && ((JSON.parse(listed.stdout) as { checkpoints?: unknown[] }).checkpoints ?? []).length > 0;
      },
      { timeoutMs: 120_000, intervalMs: 200, what: "a first checkpoint" },
    );
    const victims = engineProcesses();
    expect(victims.length).toBeGreaterThan(0);
    for (const pid of victims) process.kill(pid, "SIGKILL");

    const watched = await cli(["watch", jobId, "--json"]);
    const lines = jsonLines<TrainLine>(watched.stdout);
    const reasons = lines.flatMap((line) => (line.event?.stateChanged?.to === "JOB_STATE_RUNNING" ? [line.event.stateChanged.reason ?? ""] : []));
    expect(reasons).toEqual(["started", expect.stringMatching(/^resumed by .* after its own previous attempt stopped/) as string]);
    expect(lines.at(-1)).toMatchObject({ type: "finished", job: { state: "JOB_STATE_SUCCEEDED", attempt: 2 } });
    // The trainer lived through it and still answers.
    expect((await cli(["jobs", "--json"])).code).toBe(0);
  });
});
