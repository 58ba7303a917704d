import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { makeTempDir, NatsServer, spawnService, waitFor, type ServiceProcess } from "@poseloop/testkit";
import { decodeImage } from "@poseloop/vision";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliRunner } from "../testing/cli-runner.js";
import { tinyExperiment } from "../testing/tiny-experiment.js";

// The trainer and the inferencer run as their own processes, the way the CLI meets them in production (a
// library does not import a service). They get a NATS server of their own: trainers on one bus share its job
// queue, and a trainer of another test file must not take this file's jobs.
const TRAINER_MAIN = fileURLToPath(new URL("../../../../services/trainer/src/main.ts", import.meta.url));
const INFERENCER_MAIN = fileURLToPath(new URL("../../../../services/inferencer/src/main.ts", import.meta.url));
const model = `trainer-cli-${process.pid}`;
const TOKEN = "s3cret-cli-token";

/** Four mistakes in one file: the trainer must name every one. */
const BAD_EXPERIMENT = tinyExperiment(model)
  .replace("TRAIN_IMAGES: 40", "TRAIN_IMAGES: lots")
  .replace("SIGMA: 2", "SIGMA: 0")
  .replace("OPTIMIZER: adam", "OPTIMIZER: lion")
  .replace("  LR: 0.001", "  LR: 0.001\n  WORKERS: 1");

interface JsonLine {
  type: string;
  existing?: boolean;
  job?: { jobId: string; state: string; published?: { name: string; version: string }[] };
  event?: {
    sequence: string;
    progress?: { epoch?: number; endEpoch: number };
    validation?: { epoch: number; metrics?: { ap?: number; numImages?: number } };
    checkpointSaved?: { checkpoint: { checkpointId: string; epoch: number } };
    quantization?: { passed?: boolean };
    published?: { manifest: { model: { name: string; version: string } }; promoted?: boolean };
    stateChanged?: { to: string };
  };
}

let nats: NatsServer;
let dir: { path: string; remove: () => Promise<void> };
let trainer: ServiceProcess;
let inferencer: ServiceProcess;
let guardedTrainer: ServiceProcess;
let env: Record<string, string>;

const services = (): ServiceProcess[] => [trainer, inferencer, guardedTrainer].filter((s): s is ServiceProcess => s !== undefined);

const { cli, cliJson } = cliRunner(() => ({ env, cwd: dir.path }));

/** The serving version the inferencer reports, by `poseloop models --json`. */
async function servingVersion(): Promise<string | undefined> {
  const { code, stdout } = await cli(["models", model, "--json"]);
  if (code !== 0) return undefined;
  return (JSON.parse(stdout) as { serving: { manifest?: { model?: { version?: string } } } }).serving.manifest?.model?.version;
}

/** `wait`, or its failure with the job's record and the trainers' last log lines appended. */
async function diagnosed(jobId: string, wait: Promise<unknown>): Promise<void> {
  try {
    await wait;
  } catch (error) {
    const record = await cli(["jobs", "--json"]).catch((e: unknown) => ({ stdout: "", stderr: String(e) }));
    const job = record.stdout === "" ? record.stderr : JSON.stringify((JSON.parse(record.stdout) as { jobs: { jobId: string }[] }).jobs.find((j) => j.jobId === jobId), (key, value: unknown) => (key === "config" ? undefined : value));
    const tail = (service: ServiceProcess) => service.logs.slice(-40).map((line) => JSON.stringify(line)).join("\n");
    throw new Error(`${(error as Error).message}\njob record: ${job}\ntrainer log tail:\n${tail(trainer)}\nAPI-only trainer log tail:\n${tail(guardedTrainer)}`, { cause: error });
  }
}

beforeAll(async () => {
  nats = await NatsServer.start();
  dir = await makeTempDir("poseloop-trainer-cli-");
  await writeFile(join(dir.path, "tiny.yaml"), tinyExperiment(model));
  await writeFile(join(dir.path, "bad.yaml"), BAD_EXPERIMENT);
  const common = { POSELOOP_NATS_URL: nats.url, POSELOOP_LOG_LEVEL: "info", POSELOOP_DRAIN_TIMEOUT: "2s" };
  const trainerEnv = { ...common, POSELOOP_TRAINER_LISTEN: "127.0.0.1:0", POSELOOP_DATA_ROOT: join(dir.path, "data"), POSELOOP_WORK_DIR: join(dir.path, "work") };
  [trainer, inferencer, guardedTrainer] = await Promise.all([
    spawnService(TRAINER_MAIN, trainerEnv, 90_000),
    spawnService(INFERENCER_MAIN, { ...common, POSELOOP_INFERENCER_LISTEN: "127.0.0.1:0", POSELOOP_MODEL: model }, 90_000),
    // API only (it trains nothing), on the same bus: it sees the same jobs, behind a token.
    spawnService(TRAINER_MAIN, { ...trainerEnv, POSELOOP_TRAINER_TOKEN: TOKEN, POSELOOP_MAX_CONCURRENT_JOBS: "0", POSELOOP_WORK_DIR: join(dir.path, "work-guarded") }, 90_000),
  ]);
  env = { POSELOOP_TRAINER_ADDR: `127.0.0.1:${trainer.port}`, POSELOOP_INFERENCER_ADDR: `127.0.0.1:${inferencer.port}` };
}, 180_000);

afterAll(async () => {
  await Promise.all(services().map((service) => service.stop()));
  await nats?.dispose();
  await dir?.remove();
});

describe("poseloop against a real trainer", () => {
  const first = { jobId: "", version: "", bestCheckpoint: "" };
  const second = { jobId: "", version: "" };

  it("train --cfg: follows the job to the end with progress, validation AP, checkpoints, the int8 gate and the publication", async () => {
    const { code, stdout, stderr } = await cli(["train", "--cfg", "tiny.yaml"]);
    expect(stderr).not.toMatch(/^poseloop:/m);
    expect(code).toBe(0);
    // The way there is told on stderr; stdout has the outcome alone.
    first.jobId = /^job (job-\S+) queued: cli-tiny$/m.exec(stderr)?.[1] ?? "";
    expect(first.jobId).not.toBe("");
    const published = new RegExp(`^published ${model}@(\\S+) \\(int8, lite, AP \\d\\.\\d{3}\\) from checkpoint (e0001-s\\d+|e0002-s\\d+): serving now$`, "m").exec(stderr);
    expect(published, stderr).not.toBeNull();
    first.version = published?.[1] ?? "";
    first.bestCheckpoint = published?.[2] ?? "";

    // Progress counts epochs from 1 (the proto's 0-based epoch in progress); validation and checkpoints name
    // the epochs completed, so "epoch 1/2" progress is followed by "validation (epoch 1)".
    const expected = [
      `following job ${first.jobId}`,
      "job RUNNING: started",
      /^epoch 1\/2 {2}step \d+\/\d+ {2}loss \S+ {2}lr 1\.00e-3 {2}\S+ samples\/s/m,
      /^validation \(epoch 1\): AP \d\.\d{3} \(AP50 \d\.\d{3}, AP75 \d\.\d{3}, AR \d\.\d{3}\) {2}\(new best\)$/m,
      /^checkpoint e0001-s\d+ saved \(epoch end, best\)$/m,
      /^epoch 2\/2 {2}step \d+\/\d+ {2}loss \S+ {2}lr 1\.00e-4/m,
      /^validation \(epoch 2\): AP \d\.\d{3}/m,
      /^checkpoint e0002-s\d+ saved \(epoch end/m,
      /^int8 gate passed \(max AP drop 100\)/m,
      `published ${model}@${first.version}`,
      "job SUCCEEDED: training finished",
    ];
    let at = 0;
    for (const line of expected) {
      const rest = stderr.slice(at);
      const index = typeof line === "string" ? rest.indexOf(line) : (line.exec(rest)?.index ?? -1);
      expect(index, `${String(line)} after offset ${at} of:\n${stderr}`).toBeGreaterThanOrEqual(0);
      at += index + 1;
    }
    expect(stdout).toMatch(
      new RegExp(`^job ${first.jobId} SUCCEEDED after \\d+s\\n {2}best validation AP \\d\\.\\d{3} .*\\(epoch [12]\\)\\n {2}published ${model}@${first.version}\\n {2}last checkpoint e0002-s\\d+\\n$`),
    );
  });

  it("train --json: one JSON line per event, from 'started' to 'finished'", async () => {
    const { code, stdout, stderr } = await cli(["train", "--cfg", "tiny.yaml", "--json"]);
    expect(stderr).toBe("");
    expect(code).toBe(0);
    const lines = stdout.trimEnd().split("\n").map((line) => JSON.parse(line) as JsonLine);
    expect(lines[0]).toMatchObject({ type: "started", existing: false, job: { state: "JOB_STATE_QUEUED" } });
    second.jobId = lines[0]?.job?.jobId ?? "";
    const events = lines.slice(1, -1).map((line) => {
      expect(line.type).toBe("event");
      return line.event!;
    });
    expect(events.map((event) => Number(event.sequence))).toEqual(events.map((_, i) => i + 1));
    expect(events.some((event) => event.progress !== undefined)).toBe(true);
    expect(events.flatMap((event) => (event.validation === undefined ? [] : [event.validation.epoch]))).toEqual([1, 2]);
    expect(events.find((event) => event.validation !== undefined)?.validation?.metrics?.numImages).toBe(8);
    expect(events.flatMap((event) => (event.checkpointSaved === undefined ? [] : [event.checkpointSaved.checkpoint.epoch]))).toEqual([1, 2]);
    expect(events.find((event) => event.quantization !== undefined)?.quantization?.passed).toBe(true);
    const publication = events.find((event) => event.published !== undefined)?.published;
    expect(publication).toMatchObject({ promoted: true, manifest: { model: { name: model } } });
    second.version = publication?.manifest.model.version ?? "";
    expect(second.version).not.toBe(first.version);
    expect(events.at(-1)?.stateChanged?.to).toBe("JOB_STATE_SUCCEEDED");
    expect(lines.at(-1)).toMatchObject({ type: "finished", job: { jobId: second.jobId, state: "JOB_STATE_SUCCEEDED", published: [{ name: model, version: second.version }] } });
  });

  it("jobs: a table newest first, and one JSON document", async () => {
    const table = await cli(["jobs"]);
    expect(table.code).toBe(0);
    const rows = table.stdout.trimEnd().split("\n");
    expect(rows[0]).toMatch(/^JOB +STATE +EPOCH +BEST AP +PUBLISHED +CREATED +NAME$/);
    expect(rows[1]).toMatch(new RegExp(`^${second.jobId} +SUCCEEDED +2/2 +\\d\\.\\d{3} +${model}@${second.version} +\\S+Z +cli-tiny$`));
    expect(rows[2]).toMatch(new RegExp(`^${first.jobId} +SUCCEEDED +2/2 +\\d\\.\\d{3} +${model}@${first.version} +\\S+Z +cli-tiny$`));

    const json = await cli(["jobs", "--json", "--state", "succeeded"]);
    expect(json.code).toBe(0);
    const document = JSON.parse(json.stdout) as { jobs: { jobId: string; state: string; bestEpoch: number }[] };
    expect(document.jobs.map((job) => job.jobId)).toEqual([second.jobId, first.jobId]);
    expect(document.jobs.every((job) => job.state === "JOB_STATE_SUCCEEDED" && (job.bestEpoch === 1 || job.bestEpoch === 2))).toBe(true);
    expect(await cliJson(["jobs", "--json", "--state", "failed"])).toMatchObject({ jobs: [] });
  });

  it("watch: replays a finished job's events and its outcome", async () => {
    const { code, stdout, stderr } = await cli(["watch", first.jobId, "--skip-progress"]);
    expect(code).toBe(0);
    expect(stderr).not.toContain("samples/s");
    expect(stderr).toMatch(/^job QUEUED: submitted\njob RUNNING: started\nvalidation \(epoch 1\): AP /);
    expect(stderr).toContain(`published ${model}@${first.version}`);
    expect(stdout).toMatch(new RegExp(`^job ${first.jobId} SUCCEEDED after `));
  });

  it("checkpoints: one per epoch, the epochs completed, the best marked", async () => {
    const { code, stdout } = await cli(["checkpoints", first.jobId]);
    expect(code).toBe(0);
    const rows = stdout.trimEnd().split("\n");
    expect(rows[0]).toMatch(/^CHECKPOINT +EPOCH +STEP +REASON +AP +BEST +SIZE +CREATED$/);
    expect(rows.slice(1).map((row) => row.split(/ {2,}/).slice(0, 4))).toEqual([
      [expect.stringMatching(/^e0001-s\d+$/), "1", expect.stringMatching(/^\d+$/), "epoch end"],
      [expect.stringMatching(/^e0002-s\d+$/), "2", expect.stringMatching(/^\d+$/), "epoch end"],
    ]);
    expect(rows.filter((row) => / \* /.test(row))).toHaveLength(1);
    expect(rows.find((row) => / \* /.test(row))).toContain(first.bestCheckpoint);

    const json = await cliJson<{ checkpoints: { checkpointId: string; epoch: number; reason: string }[] }>(["checkpoints", first.jobId, "--json"]);
    expect(json.checkpoints.map((c) => [c.epoch, c.reason])).toEqual([[1, "CHECKPOINT_REASON_EPOCH_END"], [2, "CHECKPOINT_REASON_EPOCH_END"]]);
  });

  it("results: results.csv has a row per epoch with finite losses and AP, and --plot saves PNGs that decode", async () => {
    const table = await cli(["results", first.jobId, "--plot", "plots"]);
    expect(table.code, table.stderr).toBe(0);
    const [header = "", ...rows] = table.stdout.trimEnd().split("\n");
    expect(header).toMatch(/^epoch +step +train_loss +lr +ap +ap50 /);
    expect(rows.map((row) => row.split(/ +/)[0])).toEqual(["1", "2"]);
    expect(table.stderr).toMatch(/^as of checkpoint e0002-s\d+$/m);

    const json = await cliJson<{ epochs: Record<string, number | null>[]; plots: string[]; saved: string[] }>(["results", first.jobId, "--json"]);
    expect(json.epochs.map((e) => e.epoch)).toEqual([1, 2]);
    for (const epoch of json.epochs) {
      expect(Number.isFinite(epoch.train_loss) && (epoch.train_loss ?? 0) > 0, JSON.stringify(epoch)).toBe(true);
      expect(epoch.ap).toBeGreaterThanOrEqual(0);
      expect(epoch.ap).toBeLessThanOrEqual(1);
    }
    expect(json.plots).toEqual(["loss.png", "lr.png", "ap.png", "keypoint-misses.png"]);
    for (const name of json.plots) {
      const image = await decodeImage(await readFile(join(dir.path, "plots", name)));
      expect([image.width, image.height]).toEqual([640, 360]);
      expect(image.data.some((v) => v !== 255), name).toBe(true);
    }
  });

  it("val: a version and a checkpoint on the job's own validation set get the AP the trainer recorded for them", async () => {
    // The manifest's metrics are the int8 model's as the gate measured it; a checkpoint's are its fp32 weights' as
    // the run validated them. Both measurements are the same computation as Evaluate's, so the APs are equal.
    const watched = (await cli(["watch", first.jobId, "--skip-progress", "--json"])).stdout.trimEnd().split("\n").map((line) => JSON.parse(line) as JsonLine);
    const manifest = watched.find((line) => line.event?.published !== undefined)?.event?.published?.manifest as unknown as
      | { metrics?: { ap: number; numImages: number }; fp32Metrics?: { ap: number }; artifacts: { objectName: string; digest: string }[] }
      | undefined;
    expect(manifest?.metrics?.numImages).toBe(8);
    const digestOf = (file: string) => manifest?.artifacts.find((a) => a.objectName.endsWith(`/${file}`))?.digest;
    const { checkpoints } = await cliJson<{ checkpoints: { checkpointId: string; metrics?: { ap: number } }[] }>(["checkpoints", first.jobId, "--json"]);
    const best = checkpoints.find((c) => c.checkpointId === first.bestCheckpoint);

    interface Evaluation {
      metrics: { ap: number; dataset: string; numImages: number; flipTest: boolean };
      version?: { name: string; version: string };
      checkpoint?: { jobId: string; checkpointId: string };
      precision: string;
      modelDigest: string;
      jobId: string;
    }
    const version = await cliJson<Evaluation>(["val", `${model}@${first.version}`, "--json"]);
    expect(version).toMatchObject({ version: { name: model, version: first.version }, precision: "PRECISION_INT8", jobId: first.jobId, metrics: { dataset: "synthetic/val", numImages: 8, flipTest: false } });
    expect(version.metrics.ap).toBe(manifest?.metrics?.ap);
    expect(version.modelDigest).toBe(digestOf("model.int8.onnx"));
    const fp32 = await cliJson<Evaluation>(["val", `${model}@${first.version}`, "--fp32", "--json"]);
    expect([fp32.precision, fp32.modelDigest, fp32.metrics.ap]).toEqual(["PRECISION_FP32", digestOf("model.onnx"), manifest?.fp32Metrics?.ap]);
    // The checkpoint the version came from becomes, byte for byte, the fp32 model the publication exported.
    const checkpoint = await cliJson<Evaluation>(["val", "--job", first.jobId, "--checkpoint", first.bestCheckpoint, "--json"]);
    expect(checkpoint).toMatchObject({ checkpoint: { jobId: first.jobId, checkpointId: first.bestCheckpoint }, precision: "PRECISION_FP32" });
    expect(checkpoint.modelDigest).toBe(digestOf("model.onnx"));
    expect(checkpoint.metrics.ap).toBe(best?.metrics?.ap);
    // Without --checkpoint: the job's best.
    expect((await cliJson<Evaluation>(["val", "--job", first.jobId, "--json"])).checkpoint?.checkpointId).toBe(first.bestCheckpoint);

    const table = await cli(["val", `${model}@${first.version}`]);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout.split("\n")[0]).toMatch(/^ap +ap50 +ap75 +ap_medium +ap_large +ar /);
    expect(table.stderr).toMatch(new RegExp(`^evaluated ${model}@${first.version} \\(int8, sha256:[0-9a-f]{12}\\) on synthetic/val: 8 images, \\d+ people, flip test off, \\d+\\.\\d s\\n$`));

    // Another set: rendered with a seed of its own, the first two of its four pictures.
    const other = await cliJson<Evaluation>(["val", `${model}@${first.version}`, "--synthetic", "3", "--val-images", "4", "--image-size", "128x96", "--max-images", "2", "--json"]);
    expect(other.metrics).toMatchObject({ dataset: "synthetic/val", numImages: 2 });

    // A dataset outside the trainer's data root is refused before anything is read; so is a checkpoint it lacks.
    await mkdir(join(dir.path, "data"), { recursive: true });
    const outside = await cli(["val", `${model}@${first.version}`, "--data", "../work/annotations/person_keypoints_val.json"]);
    expect(outside.code).toBe(1);
    expect(outside.stderr).toMatch(/^poseloop: .*\.\.\/work is outside the allowed root/m);
    const layout = await cli(["val", `${model}@${first.version}`, "--data", "coco/annotations/person_keypoints_val.json", "--images", "coco/pictures"]);
    expect(layout.code).toBe(1);
    expect(layout.stderr).toMatch(/^poseloop: invalid evaluation request \(1 problem\)\n {2}- data\.coco\.val_annotations must be annotations\/person_keypoints_pictures\.json/);
    const missing = await cli(["val", "--job", first.jobId, "--checkpoint", "e9999-s000000"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain(`job ${first.jobId} keeps no checkpoint e9999-s000000`);
  });

  const third = { version: "" };

  it("publish JOB/CHECKPOINT: a new version serves, and the inferencer loads it", async () => {
    const last = /^(e0002-s\d+)/m.exec((await cli(["checkpoints", first.jobId])).stdout)?.[1] ?? "";
    const { code, stdout, stderr } = await cli(["publish", `${first.jobId}/${last}`]);
    expect(stderr).toBe("");
    expect(code).toBe(0);
    const line = new RegExp(`^${first.jobId}/${last} published; serving ${model}@(\\S+) \\(int8, lite, AP \\d\\.\\d{3}\\) \\(before: ${model}@${second.version}\\)\\n$`).exec(stdout);
    expect(line, stdout).not.toBeNull();
    third.version = line?.[1] ?? "";
    await waitFor(async () => (await servingVersion()) === third.version, { timeoutMs: 30_000, what: `${model}@${third.version} serving` });

    const models = await cli(["models", model]);
    expect(models.code).toBe(0);
    expect(models.stdout).toContain(`model ${model} on the inferencer at ${env["POSELOOP_INFERENCER_ADDR"]}: SERVING\n  version     ${model}@${third.version} (int8, lite, AP `);
    // The manifest's epoch is the epochs completed, like the checkpoint it came from.
    expect(models.stdout).toMatch(new RegExp(`^ {2}trained by {2}job ${first.jobId} \\(epoch 2, step \\d+\\)$`, "m"));
  });

  it("rollback MODEL: the previous version serves again, as models shows", async () => {
    const { code, stdout, stderr } = await cli(["rollback", model]);
    expect(stderr).toBe("");
    expect(code).toBe(0);
    expect(stdout).toMatch(new RegExp(`^${model}: serving ${model}@${second.version} \\(int8, lite, AP \\d\\.\\d{3}\\) \\(before: ${model}@${third.version}\\)\\n$`));
    await waitFor(async () => (await servingVersion()) === second.version, { timeoutMs: 30_000, what: `${model}@${second.version} serving again` });

    const text = await cli(["models", model]);
    expect(text.stdout).toContain(`  version     ${model}@${second.version} (int8, lite, AP `);
    // second serves again: it is not listed as served before.
    expect(text.stdout).toMatch(new RegExp(`^ {2}served before on this inferencer: ${model}@${third.version}(, ${model}@${first.version})?$`, "m"));
    expect(text.stdout).toMatch(/^published \(newest job first\):$/m);
    // Each version with its own publication time: first, then second, then third (published from the first job).
    const [secondAt, thirdAt, firstAt] = [second.version, third.version, first.version].map(
      (version) => new RegExp(`^ {2}${model}@${version} +job-\\S+ +SUCCEEDED +(\\S+Z)$`, "m").exec(text.stdout)?.[1] ?? "",
    );
    expect([firstAt, secondAt, thirdAt].every((time) => time !== ""), text.stdout).toBe(true);
    expect(firstAt! <= secondAt! && secondAt! <= thirdAt!, text.stdout).toBe(true);

    const json = await cli(["models", model, "--json"]);
    expect(json.code).toBe(0);
    const document = JSON.parse(json.stdout) as { serving: { state: string; manifest: { model: { version: string }; trainingJobId: string } }; published: { jobId: string; model: { version: string } }[] };
    expect(document.serving).toMatchObject({ state: "SERVING_STATE_SERVING", manifest: { model: { version: second.version }, trainingJobId: second.jobId } });
    expect(document.published.map((p) => [p.jobId, p.model.version])).toEqual([
      [second.jobId, second.version],
      [first.jobId, third.version],
      [first.jobId, first.version],
    ]);
  });

  it("cancel: a detached long job stops at a step boundary, and watch shows it CANCELLED", async () => {
    // Long enough that it cannot end before the cancel: 50 epochs of the tiny job once took only 10 s, less than
    // the polls below needed to see it running under the suite's load.
    const started = await cli(["train", "--cfg", "tiny.yaml", "--epochs", "5000", "--detach"]);
    expect(started.code).toBe(0);
    const jobId = /^job (job-\S+) queued: cli-tiny\n$/.exec(started.stdout)?.[1] ?? "";
    expect(jobId, started.stdout).not.toBe("");
    // Cancel once it trains (a queued job is cancelled without running at all). Under the full suite's load on 2
    // cores one poll has hit the CLI's 30 s deadline (seen twice in many runs); such a poll is retried within the
    // wait, any other failure fails the test.
    // Should the wait fail, the failure carries the job's record and what the trainers logged meanwhile.
    await diagnosed(jobId, waitFor(
      async () => {
        const { code, stdout, stderr } = await cli(["jobs", "--json"]);
        if (code !== 0 && /did not answer in time/.test(stderr)) return false;
        if (code !== 0) throw new Error(`poseloop jobs --json exited ${code}: ${stderr}`);
        const job = (JSON.parse(stdout) as { jobs: { jobId: string; state: string; progress?: unknown }[] }).jobs.find((j) => j.jobId === jobId);
        if (job !== undefined && !["JOB_STATE_QUEUED", "JOB_STATE_RUNNING"].includes(job.state)) throw new Error(`${jobId} ended ${job.state} before it could be cancelled`);
        return job?.state === "JOB_STATE_RUNNING" && job.progress !== undefined;
      },
      { timeoutMs: 90_000, intervalMs: 200, what: `${jobId} training` },
    ));
    const cancel = await cli(["cancel", jobId, "--reason", "test"]);
    expect(cancel.stderr).toBe("");
    expect(cancel.code).toBe(0);
    expect(cancel.stdout).toBe(`job ${jobId} cancelling (stops at the next step boundary)\n`);

    const watch = await cli(["watch", jobId, "--skip-progress"]);
    expect(watch.code).toBe(1);
    expect(watch.stderr).toContain("job CANCELLING: cancel requested: test\n");
    expect(watch.stderr).toContain("job CANCELLED: cancelled at a step boundary\n");
    expect(watch.stdout).toMatch(new RegExp(`^job ${jobId} CANCELLED after \\d+s\\n`, "m"));
    expect(watch.stdout).toContain("  published nothing\n");
    expect(watch.stderr.trimEnd().split("\n").at(-1)).toBe(`poseloop: job ${jobId} was cancelled (poseloop train --resume ${jobId} continues it)`);

    const rows = (await cli(["checkpoints", jobId])).stdout.trimEnd().split("\n");
    // Cancelled mid-epoch: a cancel checkpoint whose id names the batch (EPOCH is still the epochs completed).
    // A cancel that lands right after an epoch's checkpoint keeps that one as the last.
    expect(rows.at(-1)).toMatch(/^e\d{4}-s\d+(-b\d+ +\d+ +\d+ +cancel| +\d+ +\d+ +(cancel|epoch end)) /);
    const { jobs } = await cliJson<{ jobs: { jobId: string }[] }>(["jobs", "--state", "cancelled", "--json"]);
    expect(jobs.map((job) => job.jobId)).toEqual([jobId]);
  });

  it("train with an invalid experiment: exit 1, every problem on stderr, nothing queued", async () => {
    const before = (await cliJson<{ jobs: unknown[] }>(["jobs", "--json"])).jobs.length;
    const { code, stdout, stderr } = await cli(["train", "--cfg", "bad.yaml"]);
    expect(code).toBe(1);
    expect(stdout).toBe("");
    const lines = stderr.trimEnd().split("\n");
    expect(lines[0]).toBe("poseloop: invalid training config (4 problems)");
    expect(lines.slice(1).sort()).toEqual([
      '  - DATASET.SYNTHETIC.TRAIN_IMAGES: expected a non-negative integer, got "lots"',
      "  - MODEL.SIGMA: expected a number > 0, got 0",
      '  - TRAIN.OPTIMIZER: expected one of sgd, adam, adamw, got "lion"',
      "  - TRAIN.WORKERS: unknown key (did you mean WORKERS?)",
    ]);
    expect((await cliJson<{ jobs: unknown[] }>(["jobs", "--json"])).jobs).toHaveLength(before);
  });

  it("--token: a trainer with a token refuses calls without it or with another in one line each, and answers with it", async () => {
    const address = `127.0.0.1:${guardedTrainer.port}`;
    const missing = `poseloop: the trainer at ${address} needs a bearer token: pass --token or set POSELOOP_TOKEN\n`;
    const refused = `poseloop: the trainer refused the token given with --token (trainer at ${address})\n`;
    for (const [argv, message] of [
      [["jobs"], missing],
      [["watch", first.jobId], missing],
      [["jobs", "--token", "wrong-token"], refused],
      [["watch", first.jobId, "--token", "wrong-token"], refused],
    ] as const) {
      const answer = await cli([...argv, "--trainer", address]);
      expect(answer.code, argv.join(" ")).toBe(1);
      expect(answer.stdout).toBe("");
      expect(answer.stderr).toBe(message);
    }
    const allowed = await cli(["jobs", "--json", "--trainer", address, "--token", TOKEN]);
    expect(allowed.stderr).toBe("");
    expect(allowed.code).toBe(0);
    expect((JSON.parse(allowed.stdout) as { jobs: { jobId: string }[] }).jobs.map((job) => job.jobId)).toContain(first.jobId);
    const watch = await cli(["watch", first.jobId, "--skip-progress", "--trainer", address, "--token", TOKEN]);
    expect(watch.code).toBe(0);
    expect(watch.stdout).toContain(`job ${first.jobId} SUCCEEDED`);
  });

  it("trainers: this trainer first, onnxruntime on the CPU and PyTorch with torch's version; then the API-only one", async () => {
    const { code, stdout, stderr } = await cli(["trainers"]);
    expect(stderr).toBe("");
    expect(code).toBe(0);
    const [header = "", ...lines] = stdout.trimEnd().split("\n");
    expect(header).toMatch(/^TRAINER +ENGINE +VERSION +DEVICES +GPUS +NOTE$/);
    // Cells by the header's column offsets: a blank cell (onnxruntime's GPUS) leaves no gap to split on.
    const starts = ["TRAINER", "ENGINE", "VERSION", "DEVICES", "GPUS", "NOTE"].map((title) => header.indexOf(title));
    const rows = lines.map((line) => starts.map((start, i) => line.slice(start, starts[i + 1]).trim()));
    const self = rows[0]?.[0] ?? "";
    const own = rows.filter((row) => row[0] === self);
    const ort = own.find((row) => row[1] === "onnxruntime");
    expect(ort?.[3]?.split(",")).toContain("cpu");
    expect(ort?.[5]).toBe("");
    // Debian's /usr/bin/python3 has torch (pyenv's python3, first on PATH, does not): the trainer's probe finds it.
    const torch = own.find((row) => row[1] === "pytorch");
    expect(torch?.[5], torch?.join(" | ")).not.toMatch(/unavailable/);
    expect(torch?.[2]).toMatch(/^\d+\.\d+/);
    expect(torch?.[3]?.split(",")).toContain("cpu");
    expect(torch?.[4]).toMatch(/^\d+$/);
    expect(torch?.[5]).toMatch(/python \S+/);

    const others = rows.slice(own.length);
    expect(others.length).toBeGreaterThan(0);
    expect(new Set(others.map((row) => row[0])).size).toBe(1);
    expect(others.every((row) => row[5]?.startsWith("API only, takes no jobs"))).toBe(true);

    const info = await cliJson<{
      trainer: { workerId: string; maxConcurrentJobs: number; placements: string[]; engines: { name: string; available: boolean; version: string }[] };
      others: { workerId: string; maxConcurrentJobs: number; placements: string[] }[];
    }>(["trainers", "--json"]);
    expect(info.trainer.workerId).toBe(self);
    expect(info.trainer.placements).toEqual(expect.arrayContaining(["onnxruntime-cpu", "pytorch-cpu"]));
    expect(info.trainer.engines.find((engine) => engine.name === "pytorch")).toMatchObject({ available: true, version: torch?.[2] });
    expect(info.others).toEqual([expect.objectContaining({ workerId: others[0]?.[0], maxConcurrentJobs: 0, placements: [] })]);
  });

  it("sweep: refuses an unknown key with every trial's problem; runs a 2-trial sweep to its summary and plot", async () => {
    const bad = await cli(["sweep", "--cfg", "tiny.yaml", "--set", "TRAIN.LR=0.001,-1", "--set", "TRAIN.LR_TYPO=1"]);
    expect(bad.code).toBe(1);
    const problems = bad.stderr.trimEnd().split("\n");
    expect(problems[0]).toMatch(/^poseloop: invalid sweep \(\d+ problems\)$/);
    expect(problems.filter((line) => line.startsWith("  - trial 1 (TRAIN.LR=-1): TRAIN.LR "))).toHaveLength(1);
    expect(problems.filter((line) => line.startsWith("  - experiment: override TRAIN.LR_TYPO: unknown key"))).toHaveLength(1);

    const fixed = ["--set", "TRAIN.END_EPOCH=1", "--set", "TRAIN.LR_STEP=[]", "--set", "PUBLISH.MODE=never", "--set", "QUANT.ENABLED=false"];
    const { code, stdout, stderr } = await cli(["sweep", "--cfg", "tiny.yaml", "--lr", "0.001,0.002", ...fixed, "--follow", "--plot", "sweep-plots"]);
    expect(code, stderr).toBe(0);
    const sweepId = /^sweep (sweep-\S+) started: 2 trials$/m.exec(stderr)?.[1] ?? "";
    expect(sweepId).not.toBe("");
    expect(stderr).toMatch(/^trial 1 \(TRAIN\.LR=0\.002\): epoch 1 AP \d\.\d{3}$/m);
    const lines = stdout.trimEnd().split("\n");
    expect(lines[0]).toBe(`sweep ${sweepId} (cli-tiny): succeeded`);
    expect(lines.filter((line) => /^[* ] +[01] +sweep +TRAIN\.LR=0\.00[12] +\d\.\d{3} +1 +1 +succeeded$/.test(line))).toHaveLength(2);
    expect(lines.at(-1)).toMatch(/^best: trial [01], AP \d\.\d{3} at epoch 1 \(job job-\S+\); settled on TRAIN\.LR=0\.00[12]$/);
    const plot = await decodeImage(await readFile(join(dir.path, "sweep-plots", "ap-vs-train.lr.png")));
    expect([plot.width, plot.height]).toEqual([640, 360]);
    // The trials are jobs like any other, marked with their sweep.
    const { stdout: jobs } = await cli(["jobs"]);
    expect(jobs.split("\n").filter((line) => line.endsWith(`cli-tiny (${sweepId} trial 0)`) || line.endsWith(`cli-tiny (${sweepId} trial 1)`))).toHaveLength(2);
    expect((await cli(["sweeps"])).stdout).toMatch(new RegExp(`^${sweepId} +succeeded +cli-tiny +sweep +2/2`, "m"));
  });
});
