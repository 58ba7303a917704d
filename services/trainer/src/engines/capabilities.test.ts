import { create } from "@bufbuild/protobuf";
import { Device, TrainConfigSchema, TrainingEngine } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { describe, expect, it } from "vitest";
import { canRun, fleetRefusal, placementOf, placementsOf, queueNameOf, toTrainerInfo, type EngineCapability, type TrainerCapabilities } from "./capabilities.js";

const ORT: EngineCapability = { name: "onnxruntime", available: true, version: "1.30.0", devices: ["cpu", "webgpu"], gpuCount: 0, bf16: false, nccl: false, gloo: false };
const TORCH_CPU: EngineCapability = { name: "pytorch", available: true, version: "1.13.0", devices: ["cpu"], gpuCount: 0, bf16: true, nccl: false, gloo: true, python: "/usr/bin/python3" };
const TORCH_2GPU: EngineCapability = { ...TORCH_CPU, devices: ["cpu", "cuda:0", "cuda:1"], gpuCount: 2, nccl: true };
const NO_TORCH: EngineCapability = { name: "pytorch", available: false, reason: "torch cannot be imported: No module named 'torch'", version: "", devices: [], gpuCount: 0, bf16: false, nccl: false, gloo: false };

const trainer = (workerId: string, ...engines: EngineCapability[]): TrainerCapabilities => ({ workerId, engines: [ORT, ...engines] });
const config = (init: Parameters<typeof create<typeof TrainConfigSchema>>[1]) => create(TrainConfigSchema, init);

describe("placement", () => {
  it("keeps onnxruntime on the CPU on the queue of trainers before placement, and gives every other class its own", () => {
    expect(placementOf(config({}))).toBe("onnxruntime-cpu");
    expect(queueNameOf("poseloop-training", "onnxruntime-cpu")).toBe("poseloop-training");
    expect(placementOf(config({ engine: TrainingEngine.PYTORCH, device: Device.CUDA, deviceIndex: 3 }))).toBe("pytorch-cuda");
    expect(queueNameOf("poseloop-training", "pytorch-cuda")).toBe("poseloop-training-pytorch-cuda");
    // Queue names stop at 32 characters.
    expect(queueNameOf("poseloop-training", "onnxruntime-webgpu").length).toBeLessThanOrEqual(32);
  });

  it("consumes only the classes a trainer can run", () => {
    expect(placementsOf(trainer("a", NO_TORCH))).toEqual(["onnxruntime-cpu", "onnxruntime-webgpu"]);
    expect(placementsOf(trainer("b", TORCH_2GPU))).toEqual(["onnxruntime-cpu", "onnxruntime-webgpu", "pytorch-cpu", "pytorch-cuda"]);
    expect(toTrainerInfo(trainer("api", TORCH_2GPU), 0).placements).toEqual([]);
  });
});

describe("canRun", () => {
  it("names the engine, the device, the trainer and why", () => {
    expect(canRun(trainer("t1", TORCH_CPU), config({ engine: TrainingEngine.PYTORCH, device: Device.CUDA }))).toEqual({
      ok: false,
      reason: "engine pytorch cannot use cuda on trainer t1: torch.cuda.is_available() is false",
    });
    expect(canRun(trainer("t1", NO_TORCH), config({ engine: TrainingEngine.PYTORCH }))).toEqual({
      ok: false,
      reason: "engine pytorch cannot use cpu on trainer t1: torch cannot be imported: No module named 'torch'",
    });
    expect(canRun(trainer("t2", TORCH_2GPU), config({ engine: TrainingEngine.PYTORCH, device: Device.CUDA, deviceIndex: 2 }))).toEqual({
      ok: false,
      reason: "engine pytorch cannot use cuda:2 on trainer t2: it has 2 GPUs (cuda:0 to cuda:1)",
    });
    expect(canRun(trainer("t1", TORCH_CPU), config({ device: Device.CUDA }))).toEqual({
      ok: false,
      reason: "engine onnxruntime cannot use cuda on trainer t1: onnxruntime-node 1.30.0 has no cuda execution provider here (it has cpu, webgpu)",
    });
  });

  it("accepts what the trainer has", () => {
    expect(canRun(trainer("t2", TORCH_2GPU), config({ engine: TrainingEngine.PYTORCH, device: Device.CUDA, deviceIndex: 1 }))).toEqual({ ok: true });
    expect(canRun(trainer("t2", TORCH_2GPU), config({ engine: TrainingEngine.PYTORCH, device: Device.CUDA, gpus: 2 }))).toEqual({ ok: true });
    expect(canRun(trainer("t1", TORCH_CPU), config({ engine: TrainingEngine.PYTORCH, mixedPrecision: true }))).toEqual({ ok: true });
    expect(canRun(trainer("t1", NO_TORCH), config({ device: Device.WEBGPU }))).toEqual({ ok: true });
  });
});

describe("fleetRefusal", () => {
  it("lists each live worker's reason, ignores API-only trainers, and says nothing when one can run the job", () => {
    const fleet = [toTrainerInfo(trainer("a", NO_TORCH), 1), toTrainerInfo(trainer("b", TORCH_CPU), 2), toTrainerInfo(trainer("api", TORCH_2GPU), 0)];
    const cuda = config({ engine: TrainingEngine.PYTORCH, device: Device.CUDA });
    expect(fleetRefusal(fleet, cuda)).toBe("no trainer can run engine pytorch on cuda: a: torch cannot be imported: No module named 'torch'; b: torch.cuda.is_available() is false");
    expect(fleetRefusal(fleet, config({ engine: TrainingEngine.PYTORCH }))).toBeUndefined();
    expect(fleetRefusal([], cuda)).toBe("no trainer can run engine pytorch on cuda: no live trainer takes jobs");
  });
});
