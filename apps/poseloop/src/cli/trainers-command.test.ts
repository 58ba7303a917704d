import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { AppError, Code } from "@poseloop/core";
import { GetTrainerInfoResponseSchema } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { startFakeTrainer, type FakeTrainerScript } from "@poseloop/client/testing";
import { afterEach, describe, expect, it } from "vitest";
import { captureIo } from "../testing/capture-io.js";
import { runCli } from "./run-cli.js";
import { trainerRows } from "./trainers-command.js";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

/** A GPU box that answered, a CPU box with torch, and an API-only trainer whose Python has no torch. */
const THREE_TRAINERS: MessageInitShape<typeof GetTrainerInfoResponseSchema> = {
  trainer: {
    workerId: "gpu-box",
    maxConcurrentJobs: 2,
    placements: ["onnxruntime-cpu", "pytorch-cpu", "pytorch-cuda"],
    engines: [
      { name: "onnxruntime", available: true, version: "1.20.1", devices: ["cpu", "webgpu"] },
      { name: "pytorch", available: true, version: "2.3.1", devices: ["cpu", "cuda:0", "cuda:1"], gpuCount: 2, bf16: true, nccl: true, gloo: true, python: "/usr/bin/python3" },
    ],
  },
  others: [
    {
      workerId: "zz-api",
      maxConcurrentJobs: 0,
      engines: [
        { name: "onnxruntime", available: true, version: "1.20.1", devices: ["cpu"] },
        { name: "pytorch", available: false, reason: "torch cannot be imported: No module named 'torch'" },
      ],
    },
    { workerId: "cpu-box", maxConcurrentJobs: 1, engines: [{ name: "pytorch", available: true, version: "1.13.0", devices: ["cpu"], gloo: true }] },
  ],
};

async function run(argv: string[], script: FakeTrainerScript): Promise<{ code: number; stdout: string; stderr: string; calls: string[] }> {
  const server = await startFakeTrainer(script);
  cleanups.push(() => server.stop());
  const io = captureIo({ env: { POSELOOP_TRAINER_ADDR: server.address } });
  const code = await runCli(argv, io);
  return { code, stdout: io.stdoutText(), stderr: io.stderrText(), calls: server.calls.map((call) => call.method) };
}

describe("trainerRows", () => {
  it("has one row per trainer and engine, the answering trainer first, then the others by worker id", () => {
    const rows = trainerRows(create(GetTrainerInfoResponseSchema, THREE_TRAINERS));
    expect(rows.map(([trainer, engine]) => `${trainer} ${engine}`)).toEqual(["gpu-box onnxruntime", "gpu-box pytorch", "cpu-box pytorch", "zz-api onnxruntime", "zz-api pytorch"]);
  });

  it("shows versions, devices, GPUs and torch's features; onnxruntime counts no GPUs", () => {
    const [ort, torch] = trainerRows(create(GetTrainerInfoResponseSchema, THREE_TRAINERS));
    expect(ort).toEqual(["gpu-box", "onnxruntime", "1.20.1", "cpu,webgpu", "", ""]);
    expect(torch).toEqual(["gpu-box", "pytorch", "2.3.1", "cpu,cuda:0,cuda:1", "2", "bf16, nccl, gloo; python /usr/bin/python3"]);
  });

  it("says why an engine is unavailable and that an API-only trainer takes no jobs", () => {
    const rows = trainerRows(create(GetTrainerInfoResponseSchema, THREE_TRAINERS));
    expect(rows.at(-1)).toEqual(["zz-api", "pytorch", "", "", "", "API only, takes no jobs; unavailable: torch cannot be imported: No module named 'torch'"]);
  });

  it("keeps a trainer that reports no engines, saying so", () => {
    expect(trainerRows(create(GetTrainerInfoResponseSchema, { trainer: { workerId: "bare", maxConcurrentJobs: 1 } }))).toEqual([["bare", "", "", "", "", "no engines"]]);
  });
});

describe("poseloop trainers", () => {
  it("prints the table alone on stdout", async () => {
    const { code, stdout, stderr, calls } = await run(["trainers"], { trainerInfo: THREE_TRAINERS });
    expect(code).toBe(0);
    expect(stderr).toBe("");
    expect(calls).toEqual(["getTrainerInfo"]);
    const lines = stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^TRAINER +ENGINE +VERSION +DEVICES +GPUS +NOTE$/);
    expect(lines[2]?.split(/ {2,}/)).toEqual(["gpu-box", "pytorch", "2.3.1", "cpu,cuda:0,cuda:1", "2", "bf16, nccl, gloo; python /usr/bin/python3"]);
    expect(lines).toHaveLength(6);
  });

  it("--json prints the answer as one document, zero values included", async () => {
    const { code, stdout } = await run(["trainers", "--json"], { trainerInfo: THREE_TRAINERS });
    expect(code).toBe(0);
    const document = JSON.parse(stdout) as { trainer: { workerId: string; engines: { name: string; gpuCount: number }[] }; others: { workerId: string; maxConcurrentJobs: number }[] };
    expect(document.trainer.workerId).toBe("gpu-box");
    expect(document.trainer.engines.map((engine) => [engine.name, engine.gpuCount])).toEqual([["onnxruntime", 0], ["pytorch", 2]]);
    expect(document.others.map((other) => [other.workerId, other.maxConcurrentJobs])).toEqual([["zz-api", 0], ["cpu-box", 1]]);
  });

  it("names the trainer when it does not implement GetTrainerInfo, exit 1", async () => {
    const { code, stdout, stderr } = await run(["trainers"], { errors: { getTrainerInfo: new AppError(Code.UNIMPLEMENTED, "this trainer does not track the trainers of its bus") } });
    expect(code).toBe(1);
    expect(stdout).toBe("");
    expect(stderr).toMatch(/^poseloop: the trainer at 127\.0\.0\.1:\d+ does not report its engines: this trainer does not track the trainers of its bus\n$/);
  });
});
