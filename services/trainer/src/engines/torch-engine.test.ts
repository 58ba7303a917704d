import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { AppError, Code } from "@poseloop/core";
import { defineModel, IoNames, StepEngine, type ModelConfig, type StepBatch, type TrainingGraphConfig } from "@poseloop/train";
import { engineCommand, initialTrainingState, resolveTorchEngineOptions, TorchTrainingEngine, type TorchEngineOptions } from "./torch-engine.js";

// The stand-in engine needs no torch: any python3 runs it.
const PYTHON = "/usr/bin/python3";
const FAKE_ENGINE = fileURLToPath(new URL("./testing/fake-engine", import.meta.url));

const model: ModelConfig = { architecture: "lite", inputWidth: 32, inputHeight: 32, numKeypoints: 2, lite: { channels: [4, 8, 8] } };
const training: TrainingGraphConfig = { batchSize: 2, gradAccumSteps: 2, optimizer: { kind: "sgd", momentum: 0.9 } };
const definition = defineModel(model);
const layout = JSON.stringify({
  params: definition.registry.params.map((spec) => [spec.name, spec.shape]),
  buffers: definition.registry.buffers.map((spec) => [spec.name, spec.shape]),
});

const engines: TorchTrainingEngine[] = [];
afterEach(async () => {
  await Promise.all(engines.splice(0).map((engine) => engine.release()));
});

function options(mode: string, extra: Partial<TorchEngineOptions> & { at?: string } = {}): TorchEngineOptions {
  const { at, ...rest } = extra;
  return {
    model,
    training,
    seed: 7,
    python: PYTHON,
    enginePath: FAKE_ENGINE,
    progressTimeoutMs: 5_000,
    shutdownGraceMs: 2_000,
    env: { PATH: process.env.PATH, FAKE_ENGINE_MODE: mode, FAKE_ENGINE_LAYOUT: layout, ...(at === undefined ? {} : { FAKE_ENGINE_AT: at }) },
    ...rest,
  };
}

async function start(mode: string, extra: Partial<TorchEngineOptions> & { at?: string } = {}): Promise<TorchTrainingEngine> {
  const engine = await TorchTrainingEngine.create(options(mode, extra));
  engines.push(engine);
  return engine;
}

function batch(first = 0.25): StepBatch {
  const images = new Float32Array(2 * 3 * 32 * 32);
  images[0] = first;
  return { images, targets: new Float32Array(2 * 2 * 8 * 8), targetWeights: new Float32Array(4).fill(1) };
}

async function failure(promise: Promise<unknown>): Promise<AppError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof AppError) return error;
    throw error;
  }
  throw new Error("expected the engine to fail");
}

describe("TorchTrainingEngine over the protocol", () => {
  it("starts from the weights the onnxruntime engine starts from for the same seed", async () => {
    const engine = await start("ok");
    const ort = await StepEngine.create({ model, training, seed: 7 });
    try {
      const expected = ort.exportState();
      const state = await engine.exportState();
      expect([...state.tensors.keys()].sort()).toEqual([...expected.tensors.keys()].sort());
      for (const [name, data] of expected.tensors) expect(state.tensors.get(name), name).toEqual(data);
    } finally {
      await ort.release();
    }
  });

  it("takes steps, counting updates after every gradAccumSteps micro-batches", async () => {
    const engine = await start("ok");
    const first = await engine.run(batch(0.25), 0.5);
    expect(first).toEqual({ loss: 0.25, updated: false, gradNorm: undefined, step: 0 });
    const second = await engine.run(batch(0.25), 0.5);
    expect(second).toMatchObject({ loss: 0.75, updated: true, gradNorm: 1, step: 1 });
    expect(engine.step).toBe(1);
  });

  it("refuses a batch of the wrong size before sending it", async () => {
    const engine = await start("ok");
    const wrong = { ...batch(), images: new Float32Array(10) };
    await expect(engine.run(wrong, 0.1)).rejects.toMatchObject({ code: Code.INVALID_ARGUMENT, message: "images: expected 6144 values for [2, 3, 32, 32], got 10" });
    expect((await engine.run(batch(), 0.1)).updated).toBe(false);
  });

  it("round-trips its state, and loads weights by name with skipped prefixes", async () => {
    const engine = await start("ok");
    const { state } = initialTrainingState(definition, training, 99);
    await engine.importState({ ...state, step: 40, microStep: 1 });
    expect(engine.step).toBe(40);
    const head = definition.registry.params.at(-1)?.name as string;
    const stem = definition.registry.params[0]?.name as string;
    const weights = new Map([
      [stem, new Float32Array(state.tensors.get(IoNames.param(stem))?.length ?? 0).fill(3)],
      [head, new Float32Array(state.tensors.get(IoNames.param(head))?.length ?? 0).fill(5)],
    ]);
    await engine.loadWeights(weights, { skip: [head.split(".")[0] as string] });
    const loaded = await engine.weights();
    expect(loaded.params.get(stem)?.every((v) => v === 3)).toBe(true);
    expect(loaded.params.get(head)).toEqual(state.tensors.get(IoNames.param(head)));
    expect([...loaded.params.keys()]).toEqual(definition.registry.params.map((spec) => spec.name));
    expect((await engine.exportState()).step).toBe(40);
    await expect(engine.loadWeights(new Map([["no.such.weight", new Float32Array(1)]]))).rejects.toMatchObject({ code: Code.INVALID_ARGUMENT, message: "the model has no parameter or buffer no.such.weight" });
    await expect(engine.importState({ ...state, microStep: 2 })).rejects.toMatchObject({ code: Code.INVALID_ARGUMENT, message: "micro-step 2 is outside 0..1" });
  });

  it("fails with FAILED_PRECONDITION naming the python binary when it does not exist", async () => {
    const error = await failure(TorchTrainingEngine.create(options("ok", { python: "/opt/nowhere/python3" })));
    expect(error.code).toBe(Code.FAILED_PRECONDITION);
    expect(error.message).toBe("the pytorch engine cannot start: /opt/nowhere/python3 not found");
  });

  it("fails with FAILED_PRECONDITION naming the binary and the reason when torch cannot be imported", async () => {
    const error = await failure(TorchTrainingEngine.create(options("no-torch")));
    expect(error.code).toBe(Code.FAILED_PRECONDITION);
    expect(error.message).toBe(`the pytorch engine cannot run with ${PYTHON}: torch cannot be imported: No module named 'torch'`);
  });

  it("reports an engine that dies with its exit code and the exception's last line only", async () => {
    const lines: string[] = [];
    const engine = await start("die", { onStderr: (line) => lines.push(line) });
    // Both requests in flight fail with the engine's death, not only the one it died on.
    const [step, state] = await Promise.allSettled([engine.run(batch(), 0.1), engine.exportState()]);
    expect(step.status === "rejected" && state.status === "rejected" && state.reason === step.reason).toBe(true);
    const error = (step as PromiseRejectedResult).reason as AppError;
    expect(error.code).toBe(Code.INTERNAL);
    expect(error.message).toBe("the pytorch engine exited with code 1: RuntimeError: CUDA error: an illegal memory access was encountered");
    expect(lines).toContain('  File "/opt/engine/step.py", line 3, in step');
    // Later requests fail the same way instead of writing into a dead pipe.
    await expect(engine.run(batch(), 0.1)).rejects.toBe(error);
    await expect(engine.exportState()).rejects.toBe(error);
  });

  it("reports an engine killed by a signal as UNAVAILABLE: the job goes back to the queue and resumes", async () => {
    const engine = await start("killed");
    const error = await failure(engine.run(batch(), 0.1));
    expect(error.code).toBe(Code.UNAVAILABLE);
    expect(error.message).toBe("the pytorch engine was killed by SIGKILL (the system may have run out of memory)");
  });

  it("fails the job and kills the engine when it prints on stdout", async () => {
    const engine = await start("garbage");
    const started = Date.now();
    const error = await failure(engine.run(batch(), 0.1));
    expect(error.code).toBe(Code.INTERNAL);
    expect(error.message).toBe('the pytorch engine broke its protocol: "Epoch 1: loss went down, feeling good"');
    await engine.release();
    // Killed at once, not after the 30 s the stand-in sleeps.
    expect(Date.now() - started).toBeLessThan(4_000);
  });

  it("kills an engine that stops answering, after the progress timeout", async () => {
    const engine = await start("hang", { progressTimeoutMs: 400 });
    const error = await failure(engine.run(batch(), 0.1));
    expect(error.code).toBe(Code.DEADLINE_EXCEEDED);
    expect(error.message).toBe("the pytorch engine did not answer step within 400 ms and was stopped");
    await engine.release();
  });

  it("times out an engine that never says hello, after the start timeout (importing torch is slower than a step)", async () => {
    const started = Date.now();
    const error = await failure(TorchTrainingEngine.create(options("silent", { progressTimeoutMs: 100, startTimeoutMs: 600 })));
    expect(error.code).toBe(Code.DEADLINE_EXCEEDED);
    expect(error.message).toBe("the pytorch engine did not answer at start within 600 ms and was stopped");
    expect(Date.now() - started).toBeGreaterThanOrEqual(590);
  });

  it.each([
    ["INVALID_ARGUMENT", Code.INVALID_ARGUMENT, "invalid_argument says no"],
    ["FAILED_PRECONDITION", Code.FAILED_PRECONDITION, "failed_precondition says no"],
    ["OUT_OF_MEMORY", Code.RESOURCE_EXHAUSTED, "out_of_memory says no"],
    ["INTERNAL", Code.INTERNAL, "the pytorch engine failed: internal says no"],
  ])("maps an engine's %s answer", async (engineCode, code, message) => {
    const engine = await start(`error:${engineCode}`);
    const error = await failure(engine.run(batch(), 0.1));
    expect({ code: error.code, message: error.message }).toEqual({ code, message });
    const stopping = engineCode === "OUT_OF_MEMORY" || engineCode === "INTERNAL";
    // After an out-of-memory or internal error only the last good state may be read.
    if (stopping) await expect(engine.run(batch(), 0.1)).rejects.toBe(error);
    // Other refusals leave the engine running: it answers the next request (here, refusing it again).
    else await expect(engine.run(batch(), 0.1)).rejects.not.toBe(error);
    expect((await engine.exportState()).step).toBe(0);
  });

  it("kills an engine that does not exit after shutdown", async () => {
    const engine = await start("ignore-shutdown", { at: "shutdown", shutdownGraceMs: 300 });
    const started = Date.now();
    await engine.release();
    expect(Date.now() - started).toBeLessThan(2_000);
    await expect(engine.run(batch(), 0.1)).rejects.toMatchObject({ code: Code.FAILED_PRECONDITION, message: "the pytorch engine was released" });
    await engine.release();
  });
});

describe("TorchTrainingEngine options", () => {
  const base = options("ok");

  it("runs one process without torchrun, under torchrun for several GPUs or nodes", () => {
    expect(engineCommand(resolveTorchEngineOptions(base))).toEqual({ command: PYTHON, args: ["-m", "poseloop_torch"] });
    expect(engineCommand(resolveTorchEngineOptions({ ...base, gpus: 4 }))).toEqual({
      command: PYTHON,
      args: ["-m", "poseloop_torch.torchrun", "--standalone", "--nproc_per_node", "4", "--max_restarts", "0", "-m", "poseloop_torch"],
    });
    expect(engineCommand(resolveTorchEngineOptions({ ...base, gpus: 8, nodes: 2, nodeRank: 1, rdzvEndpoint: "trainer-0.internal:29400", rdzvId: "job-42", torchrun: "/usr/bin/torchrun" }))).toEqual({
      command: "/usr/bin/torchrun",
      args: ["--nnodes", "2", "--node_rank", "1", "--master_addr", "trainer-0.internal", "--master_port", "29400", "--nproc_per_node", "8", "--max_restarts", "0", "-m", "poseloop_torch"],
    });
    // An IPv6 endpoint: torchrun takes the address without its brackets.
    expect(engineCommand(resolveTorchEngineOptions({ ...base, nodes: 2, rdzvEndpoint: "[fd00::7]:29400" })).args.slice(2, 10)).toEqual(["--nnodes", "2", "--node_rank", "0", "--master_addr", "fd00::7", "--master_port", "29400"]);
  });

  it("names every invalid option at once", () => {
    expect(() => resolveTorchEngineOptions({ ...base, device: "tpu", replicas: 0, nodes: 2, nodeRank: 2 })).toThrow(
      expect.objectContaining({
        code: Code.INVALID_ARGUMENT,
        problems: [
          'device must be cpu, cuda or cuda:N, got "tpu"',
          "replicas must be an integer ≥ 1, got 0",
          "node rank must lie in 0..1, got 2",
          'a multi-node job needs its rendezvous endpoint as host:port, got ""',
        ],
      }),
    );
  });
});
