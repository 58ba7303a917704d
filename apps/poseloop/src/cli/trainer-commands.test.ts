import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { AppError, Code } from "@poseloop/core";
import { BearerTokenFailure } from "@poseloop/grpc";
import { JobState, TrainerService } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { makeTempDir } from "@poseloop/testkit";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fakeJob, startFakeTrainer, type FakeServer, type FakeTrainerScript } from "@poseloop/client/testing";
import { captureIo } from "../testing/capture-io.js";
import { startServiceStub } from "../testing/service-stub.js";
import { runCli } from "./run-cli.js";

const cleanups: (() => Promise<void> | void)[] = [];
let dir: string;
beforeEach(async () => {
  const temp = await makeTempDir("poseloop-cli-");
  cleanups.push(temp.remove);
  dir = temp.path;
  await writeFile(join(dir, "demo.yaml"), "TRAIN:\n  LR: 0.001\n  END_EPOCH: 2\n");
});
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function trainer(script: FakeTrainerScript): Promise<FakeServer> {
  const server = await startFakeTrainer(script);
  cleanups.push(() => server.stop());
  return server;
}

/** A job that ran two epochs, validated, checkpointed and published. */
function finishedRun(state: JobState = JobState.SUCCEEDED): FakeTrainerScript {
  const job = fakeJob({
    jobId: "job-1",
    state,
    config: { name: "demo" },
    startedAt: { seconds: 1000n },
    finishedAt: { seconds: 1130n },
    bestMetrics: { ap: 0.712, ap50: 0.9, ap75: 0.75, ar: 0.76 },
    bestEpoch: 2,
    published: state === JobState.SUCCEEDED ? [{ name: "demo", version: "v3" }] : [],
    lastCheckpoint: { checkpointId: "e0002-s000020", jobId: "job-1", epoch: 2, step: 20n, reason: 1, isBest: true, sizeBytes: 3n * 1024n * 1024n },
    ...(state === JobState.FAILED ? { error: { code: 13, message: "loss is not finite at step 12" } } : {}),
  });
  const progress = (epoch: number, stepInEpoch: number) => ({
    event: { case: "progress" as const, value: { epoch, endEpoch: 2, step: BigInt(epoch * 10 + stepInEpoch), stepInEpoch, stepsPerEpoch: 10, loss: 0.002, lr: 0.001, samplesPerSecond: 40, etaSeconds: 30 } },
  });
  return {
    start: fakeJob({ jobId: "job-1", state: JobState.QUEUED, config: { name: "demo" } }),
    jobs: [job],
    events: {
      "job-1": [
        { event: { case: "stateChanged", value: { from: JobState.QUEUED, to: JobState.RUNNING } } },
        progress(0, 5),
        progress(0, 10),
        { event: { case: "validation", value: { epoch: 1, metrics: { ap: 0.5, ap50: 0.8, ap75: 0.5, ar: 0.6 }, isBest: true } } },
        progress(1, 10),
        { event: { case: "validation", value: { epoch: 2, metrics: { ap: 0.712, ap50: 0.9, ap75: 0.75, ar: 0.76 }, isBest: true } } },
        { event: { case: "checkpointSaved", value: { checkpoint: { checkpointId: "e0002-s000020", reason: 1, isBest: true } } } },
        ...(state === JobState.SUCCEEDED
          ? [{ event: { case: "published" as const, value: { promoted: true, checkpointId: "e0002-s000020", manifest: { model: { name: "demo", version: "v3" }, precision: 3, metrics: { ap: 0.705 } } } } }]
          : []),
        { event: { case: "stateChanged", value: { from: JobState.RUNNING, to: state, ...(state === JobState.FAILED ? { error: { code: 13, message: "loss is not finite at step 12" } } : {}) } } },
      ],
    },
  };
}

describe("poseloop train", () => {
  it("sends the YAML with the flags as overrides, follows the job with plain lines on stderr and prints the outcome on stdout", async () => {
    const server = await trainer(finishedRun());
    const io = captureIo({ cwd: dir, env: { POSELOOP_TRAINER_ADDR: server.address, POSELOOP_TOKEN: "tok" } });
    const code = await runCli(["train", "--cfg", "demo.yaml", "--lr", "5e-4", "--batch-size", "16", "--grad-accum", "4", "--clip-grad", "5", "--epochs", "2", "--set", "TRAIN.OPTIMIZER=adamw", "--label", "team=pose"], io);
    expect(code).toBe(0);
    const start = server.calls.find((c) => c.method === "startTraining")!;
    expect(start.headers["authorization"]).toBe("Bearer tok");
    expect(start.request).toMatchObject({
      source: { case: "experimentYaml", value: "TRAIN:\n  LR: 0.001\n  END_EPOCH: 2\n" },
      overrides: { "TRAIN.LR": "5e-4", "TRAIN.BATCH_SIZE_PER_GPU": "16", "TRAIN.GRAD_ACCUM_STEPS": "4", "TRAIN.CLIP_GRAD": "5", "TRAIN.END_EPOCH": "2", "TRAIN.OPTIMIZER": "adamw" },
      labels: { team: "pose" },
    });
    const log = io.stderrText();
    expect(log).toMatch(/^job job-1 queued: demo\nfollowing job job-1 \(Ctrl-C stops following; the job goes on\)\n/);
    expect(log).toContain("epoch 1/2  step 5/10  loss 2.000e-3  lr 1.00e-3  40.0 samples/s  ETA 30s\n");
    expect(log).toContain("validation (epoch 2): AP 0.712 (AP50 0.900, AP75 0.750, AR 0.760)  (new best)\n");
    expect(log).toContain("published demo@v3 (int8, AP 0.705) from checkpoint e0002-s000020: serving now\n");
    expect(log).not.toContain("\r");
    // stdout is the outcome and nothing else: `poseloop train ... > outcome.txt` keeps just that.
    expect(io.stdoutText()).toBe("job job-1 SUCCEEDED after 2m10s\n  best validation AP 0.712 (AP50 0.900, AP75 0.750, AR 0.760) (epoch 2)\n  published demo@v3\n  last checkpoint e0002-s000020\n");
  });

  it("redraws one progress bar in place on a terminal, with events printed above it", async () => {
    const script = finishedRun();
    // Mid-epoch, after the first progress report.
    script.events!["job-1"]!.splice(2, 0, { event: { case: "warning", value: { code: "slow_data", message: "data loading is the bottleneck" } } });
    const server = await trainer(script);
    const io = captureIo({ cwd: dir, tty: true, columns: 100, env: { POSELOOP_TRAINER_ADDR: server.address } });
    expect(await runCli(["train", "--cfg", "demo.yaml"], io)).toBe(0);
    const clear = "\r\x1b[2K";
    const out = io.stderrText();
    expect(out).toContain(`${clear}epoch 1/2 [###`);
    // An event clears the bar, prints its line, and draws the bar again below it.
    const warning = out.indexOf(`${clear}warning [slow_data]: data loading is the bottleneck\n`);
    expect(warning).toBeGreaterThan(0);
    expect(out.slice(warning).split("\n")[1]).toMatch(/^epoch 1\/2 \[#+-+\] 5\/10/);
    expect(out).not.toMatch(/epoch 1\/2 {2}step 5\/10/);
    // Every redrawn line fits the terminal.
    for (const piece of out.split(clear).flatMap((part) => part.split("\n"))) expect(piece.length).toBeLessThan(100);
    expect(io.stdoutText()).not.toContain(clear);
  });

  it("keeps each finished epoch's last bar on the terminal instead of drawing the next epoch over it", async () => {
    const script = finishedRun();
    const progress = (epoch: number, stepInEpoch: number) => ({
      event: { case: "progress" as const, value: { epoch, endEpoch: 3, step: BigInt(epoch * 10 + stepInEpoch), stepInEpoch, stepsPerEpoch: 10, loss: 0.002, lr: 0.001, samplesPerSecond: 40, etaSeconds: 30 } },
    });
    const server = await trainer({
      ...script,
      events: {
        "job-1": [
          progress(0, 5),
          progress(0, 10),
          // Epoch 1 ends with its validation; epoch 2 has none and ends when epoch 3 starts.
          { event: { case: "validation", value: { epoch: 1, metrics: { ap: 0.5 }, isBest: true } } },
          progress(1, 5),
          progress(1, 10),
          progress(2, 4),
          { event: { case: "stateChanged", value: { from: JobState.RUNNING, to: JobState.SUCCEEDED } } },
        ],
      },
    });
    const io = captureIo({ tty: true, columns: 120, env: { POSELOOP_TRAINER_ADDR: server.address } });
    expect(await runCli(["watch", "job-1"], io)).toBe(0);
    // What the terminal shows at the end: each \r\x1b[2K wipes the line it is on.
    const screen = io
      .stderrText()
      .split("\n")
      .map((line) => line.split("\r\x1b[2K").at(-1) ?? "")
      .filter((line) => line !== "");
    expect(screen.map((line) => line.replace(/ \[[#-]+\] (\d+\/\d+).*/, " $1"))).toEqual([
      "epoch 1/3 10/10",
      "validation (epoch 1): AP 0.500 (AP50 0.000, AP75 0.000, AR 0.000)  (new best)",
      "epoch 2/3 10/10",
      // An event mid-epoch is printed above the bar, which goes on below it.
      "job SUCCEEDED",
      "epoch 3/3 4/10",
    ]);
  });

  it("draws the bar on a terminal's stderr while stdout goes to a file", async () => {
    const server = await trainer(finishedRun());
    const io = captureIo({ tty: true, stdoutTty: false, env: { POSELOOP_TRAINER_ADDR: server.address } });
    expect(await runCli(["watch", "job-1"], io)).toBe(0);
    expect(io.stderrText()).toContain("\r\x1b[2Kepoch 2/2 [");
    expect(io.stdoutText()).toMatch(/^job job-1 SUCCEEDED after 2m10s\n/);
  });

  it("prints JSON lines with --json: started, every event, finished", async () => {
    const server = await trainer(finishedRun());
    const io = captureIo({ cwd: dir });
    expect(await runCli(["train", "--trainer", server.address, "--cfg", "demo.yaml", "--json"], io)).toBe(0);
    const lines = io.stdoutText().trimEnd().split("\n").map((line) => JSON.parse(line) as { type: string; event?: { sequence: string; validation?: { metrics: { ap: number } } }; job?: { jobId: string; state: string } });
    expect(lines[0]).toMatchObject({ type: "started", existing: false, job: { jobId: "job-1", state: "JOB_STATE_QUEUED" } });
    expect(lines.filter((line) => line.type === "event")).toHaveLength(9);
    expect(lines[1]?.event?.sequence).toBe("1");
    expect(lines.find((line) => line.event?.validation !== undefined)?.event?.validation?.metrics.ap).toBeCloseTo(0.5);
    expect(lines.at(-1)).toMatchObject({ type: "finished", job: { jobId: "job-1", state: "JOB_STATE_SUCCEEDED" } });
  });

  it("exits 1 with the job's error when it fails", async () => {
    const server = await trainer(finishedRun(JobState.FAILED));
    const io = captureIo({ cwd: dir, env: { POSELOOP_TRAINER_ADDR: server.address } });
    expect(await runCli(["train", "--cfg", "demo.yaml"], io)).toBe(1);
    expect(io.stderrText()).toContain("job FAILED (loss is not finite at step 12)\n");
    expect(io.stdoutText()).toMatch(/^job job-1 FAILED after 2m10s\n {2}error: loss is not finite at step 12\n/);
    expect(io.stderrText().trimEnd().split("\n").at(-1)).toBe("poseloop: job job-1 failed: loss is not finite at step 12");
  });

  it("prints the trainer's validation problems one per line and exits 1", async () => {
    const server = await trainer({ start: AppError.invalid("experiment", ["TRAIN.LR must be positive, got -1", "unknown key TRAIN.FOO"]) });
    const io = captureIo({ cwd: dir, env: { POSELOOP_TRAINER_ADDR: server.address } });
    expect(await runCli(["train", "--cfg", "demo.yaml", "--set", "TRAIN.FOO=1"], io)).toBe(1);
    expect(io.stderrText()).toBe("poseloop: invalid experiment (2 problems)\n  - TRAIN.LR must be positive, got -1\n  - unknown key TRAIN.FOO\n");
    expect(io.stdoutText()).toBe("");
  });

  it("says which file is missing and which trainer is down", async () => {
    const missing = captureIo({ cwd: dir });
    expect(await runCli(["train", "--cfg", "nope.yaml"], missing)).toBe(1);
    expect(missing.stderrText()).toBe("poseloop: experiment file nope.yaml not found\n");

    const server = await trainer({});
    await server.stop();
    const down = captureIo({ cwd: dir });
    expect(await runCli(["train", "--cfg", "demo.yaml", "--trainer", server.address], down)).toBe(1);
    expect(down.stderrText()).toMatch(new RegExp(`^poseloop: the trainer at ${server.address} is unavailable: .*ECONNREFUSED.*\\n$`));
  });

  it("watches on from the last event when a draining trainer ends the watch of a running job", async () => {
    const server = await trainer({ ...finishedRun(), endWatchAfter: 4 });
    const io = captureIo({ env: { POSELOOP_TRAINER_ADDR: server.address } });
    expect(await runCli(["watch", "job-1", "--json"], io)).toBe(0);
    const sequences = io.stdoutText().trimEnd().split("\n").map((line) => JSON.parse(line) as { event?: { sequence: string } }).flatMap((line) => (line.event === undefined ? [] : [line.event.sequence]));
    expect(sequences).toEqual(["1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    const watches = server.calls.filter((c) => c.method === "watchJob").map((c) => (c.request as { afterSequence: bigint }).afterSequence);
    expect(watches).toEqual([0n, 4n]);
  });

  it("resumes a job with a new end epoch and follows it; --detach prints it and returns", async () => {
    const server = await trainer(finishedRun());
    const io = captureIo({ env: { POSELOOP_TRAINER_ADDR: server.address } });
    expect(await runCli(["train", "--resume", "job-1", "--epochs", "30", "--detach"], io)).toBe(0);
    expect(server.calls.map((c) => c.method)).toEqual(["resumeJob"]);
    expect(server.calls[0]?.request).toMatchObject({ jobId: "job-1", endEpoch: 30 });
    expect(io.stdoutText()).toBe("job job-1 queued again from checkpoint e0002-s000020 (attempt 2)\n");
  });

  it("stops following on Ctrl-C with exit code 130, leaving the job alone", async () => {
    const script = finishedRun();
    const server = await trainer({ ...script, events: { "job-1": script.events!["job-1"]!.slice(0, 3) }, live: true });
    const controller = new AbortController();
    const io = captureIo({ cwd: dir, env: { POSELOOP_TRAINER_ADDR: server.address }, signal: controller.signal });
    setTimeout(() => controller.abort(), 300);
    expect(await runCli(["train", "--cfg", "demo.yaml"], io)).toBe(130);
    expect(io.stderrText()).toContain("epoch 1/2  step 10/10");
    expect(io.stderrText().trimEnd().split("\n").at(-1)).toBe("poseloop: stopped following job job-1; it goes on (poseloop watch job-1 follows it again)");
    expect(io.stdoutText()).toBe("");
    expect(server.calls.map((c) => c.method)).toEqual(["startTraining", "watchJob"]);
  });
});

describe("job commands", () => {
  it("lists jobs as a table and as one JSON document", async () => {
    const server = await trainer(finishedRun());
    const env = { POSELOOP_TRAINER_ADDR: server.address };
    const table = captureIo({ env });
    expect(await runCli(["jobs", "--state", "succeeded,failed"], table)).toBe(0);
    expect(table.stdoutText().split("\n").slice(0, 2)).toEqual([
      "JOB    STATE      EPOCH  BEST AP  PUBLISHED  CREATED               NAME",
      "job-1  SUCCEEDED         0.712    demo@v3    2026-11-27T23:15:00Z  demo",
    ]);
    expect(server.calls[0]?.request).toMatchObject({ states: [JobState.SUCCEEDED, JobState.FAILED] });

    const json = captureIo({ env });
    expect(await runCli(["jobs", "--json"], json)).toBe(0);
    const document = JSON.parse(json.stdoutText()) as { jobs: { jobId: string; state: string; bestMetrics: { ap: number } }[] };
    expect(document.jobs[0]).toMatchObject({ jobId: "job-1", state: "JOB_STATE_SUCCEEDED" });
    expect(document.jobs[0]?.bestMetrics.ap).toBeCloseTo(0.712);

    // An empty listing has no table; saying so is not a job.
    const empty = captureIo({ env });
    expect(await runCli(["jobs", "--state", "failed"], empty)).toBe(0);
    expect(empty.stdoutText()).toBe("");
    expect(empty.stderrText()).toBe("no jobs\n");

    // proto3 JSON would leave the empty list out; `jq '.jobs[]'` needs it there.
    const none = captureIo({ env });
    expect(await runCli(["jobs", "--state", "failed", "--json"], none)).toBe(0);
    expect(JSON.parse(none.stdoutText())).toMatchObject({ jobs: [] });
  });

  it("prints the hint for the next page on stderr, leaving stdout to the table", async () => {
    const server = await startServiceStub(TrainerService, {
      listJobs: () => ({ jobs: [fakeJob({ jobId: "job-2", state: JobState.RUNNING })], nextPageToken: "MQ" }),
    });
    cleanups.push(() => server.stop());
    const io = captureIo({ env: { POSELOOP_TRAINER_ADDR: server.address } });
    expect(await runCli(["jobs", "--limit", "1"], io)).toBe(0);
    expect(io.stdoutText().trimEnd().split("\n")).toEqual([expect.stringMatching(/^JOB +STATE/), expect.stringMatching(/^job-2 +RUNNING/)]);
    expect(io.stderrText()).toBe("more: poseloop jobs --page-token MQ\n");
  });

  it("watches, cancels and lists checkpoints", async () => {
    const server = await trainer(finishedRun());
    const env = { POSELOOP_TRAINER_ADDR: server.address };
    const watch = captureIo({ env });
    expect(await runCli(["watch", "job-1", "--skip-progress"], watch)).toBe(0);
    expect(watch.stdoutText()).not.toContain("samples/s");
    expect(watch.stdoutText()).toContain("job job-1 SUCCEEDED");

    const cancel = captureIo({ env });
    expect(await runCli(["cancel", "job-1", "--reason", "wrong data"], cancel)).toBe(0);
    expect(cancel.stdoutText()).toBe("job job-1 cancelling (stops at the next step boundary)\n");
    expect(server.calls.find((c) => c.method === "cancelJob")?.request).toMatchObject({ reason: "wrong data" });

    const checkpoints = captureIo({ env });
    expect(await runCli(["checkpoints", "job-1"], checkpoints)).toBe(0);
    expect(checkpoints.stdoutText()).toMatch(/^CHECKPOINT +EPOCH +STEP +REASON +AP +BEST +SIZE +CREATED\ne0002-s000020 +2 +20 +epoch end +\* +3\.0 MiB/);

    const missing = captureIo({ env });
    expect(await runCli(["cancel", "job-9"], missing)).toBe(1);
    expect(missing.stderrText()).toBe("poseloop: job job-9 not found\n");
  });

  it("publishes a checkpoint named either way and rolls back", async () => {
    const server = await trainer({ jobs: [] });
    const env = { POSELOOP_TRAINER_ADDR: server.address };
    const publish = captureIo({ env });
    expect(await runCli(["publish", "job-1/e0002-s000020"], publish)).toBe(0);
    expect(publish.stdoutText()).toBe("job-1/e0002-s000020 published; serving demo@v2 (lite) (before: demo@v1)\n");
    expect(await runCli(["publish", "--job", "job-1", "--checkpoint", "e1", "--skip-promotion"], captureIo({ env }))).toBe(0);
    const rollback = captureIo({ env });
    expect(await runCli(["rollback", "demo", "--json"], rollback)).toBe(0);
    expect(JSON.parse(rollback.stdoutText())).toMatchObject({ serving: { model: { name: "demo", version: "v2" } }, previous: { version: "v1" } });
    expect(await runCli(["rollback", "demo", "--to", "v1"], captureIo({ env }))).toBe(0);
    expect(server.calls.map((c) => (c.request as { target: { case: string } }).target.case)).toEqual(["checkpoint", "checkpoint", "rollbackModelName", "version"]);
  });

  it("applies --timeout to each request", async () => {
    const server = await trainer({ delayMs: 3000, jobs: [] });
    const io = captureIo({ env: { POSELOOP_TRAINER_ADDR: server.address } });
    const started = Date.now();
    expect(await runCli(["jobs", "--timeout", "0.2"], io)).toBe(1);
    expect(Date.now() - started).toBeLessThan(2000);
    expect(io.stderrText()).toMatch(/^poseloop: the trainer at .* did not answer in time/);
    // publish has a long deadline of its own (the trainer exports and gates first); --timeout still wins.
    const publish = captureIo({ env: { POSELOOP_TRAINER_ADDR: server.address } });
    expect(await runCli(["publish", "job-1/e1", "--timeout", "0.2"], publish)).toBe(1);
    expect(publish.stderrText()).toMatch(/^poseloop: the trainer at .* did not answer in time/);
  });
});

describe("errors from the trainer", () => {
  it("tells a missing token from a refused one, naming the trainer and where the token came from", async () => {
    const missing = await trainer({ errors: { listJobs: new AppError(Code.UNAUTHENTICATED, BearerTokenFailure.MISSING) } });
    const none = captureIo({ env: { POSELOOP_TRAINER_ADDR: missing.address } });
    expect(await runCli(["jobs"], none)).toBe(1);
    expect(none.stderrText()).toBe(`poseloop: the trainer at ${missing.address} needs a bearer token: pass --token or set POSELOOP_TOKEN\n`);

    const refused = await trainer({ errors: { listJobs: new AppError(Code.UNAUTHENTICATED, BearerTokenFailure.REFUSED) } });
    const fromEnv = captureIo({ env: { POSELOOP_TRAINER_ADDR: refused.address, POSELOOP_TOKEN: "wrong" } });
    expect(await runCli(["jobs"], fromEnv)).toBe(1);
    expect(fromEnv.stderrText()).toBe(`poseloop: the trainer refused the token in POSELOOP_TOKEN (trainer at ${refused.address})\n`);
    const fromFlag = captureIo({ env: { POSELOOP_TRAINER_ADDR: refused.address } });
    expect(await runCli(["jobs", "--token", "wrong"], fromFlag)).toBe(1);
    expect(fromFlag.stderrText()).toBe(`poseloop: the trainer refused the token given with --token (trainer at ${refused.address})\n`);
  });

  it("judges a trainer that words its refusal otherwise by whether a token was sent, in streams too", async () => {
    const server = await trainer({ errors: { watchJob: new AppError(Code.UNAUTHENTICATED, "this trainer needs a bearer token") } });
    const io = captureIo({ env: { POSELOOP_TRAINER_ADDR: server.address } });
    expect(await runCli(["watch", "job-1", "--token", "wrong"], io)).toBe(1);
    expect(io.stderrText()).toBe(`poseloop: the trainer refused the token given with --token (trainer at ${server.address})\n`);
  });
});
