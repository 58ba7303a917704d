/**
 * Training-step speed of the zoo models: ms/step and samples/s of StepEngine (the graph the StepRunner's worker
 * runs), against PyTorch's CPU step for the identical model and batch in the same run (when /usr/bin/python3
 * has torch), the ratio of a step to a forward-only inference of the same model and batch (the physical floor is
 * about 3x), and the share of a step spent passing the whole training state in and out of onnxruntime.
 */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { cpus } from "node:os";
import { fileURLToPath } from "node:url";
import * as ort from "onnxruntime-node";
import { encodeModel, GraphBuilder } from "@poseloop/onnx";
import { Rng, StepEngine, type ModelConfig } from "@poseloop/train";
import { compareMs, fmt, printTable, timeMs } from "./harness.js";

interface Case {
  readonly label: string;
  readonly model: ModelConfig;
  readonly batch: number;
  readonly reps: number;
}

const K = 17;
const CASES: readonly Case[] = [
  { label: "lite 64x48", model: { architecture: "lite", inputWidth: 48, inputHeight: 64, numKeypoints: K }, batch: 32, reps: 5 },
  { label: "SimpleBaseline-R18 256x192", model: { architecture: "simplebaseline", inputWidth: 192, inputHeight: 256, numKeypoints: K, simpleBaseline: { depth: 18 } }, batch: 32, reps: 2 },
  { label: "SimpleBaseline-R50 256x192", model: { architecture: "simplebaseline", inputWidth: 192, inputHeight: 256, numKeypoints: K, simpleBaseline: { depth: 50 } }, batch: 32, reps: 2 },
  { label: "HRNet-W32 256x192", model: { architecture: "hrnet", inputWidth: 192, inputHeight: 256, numKeypoints: K, hrnet: { width: 32 } }, batch: 8, reps: 2 },
];

const PYTHON = "/usr/bin/python3";

function torchPeer(c: Case): { stepMs: number; forwardMs: number } | undefined {
  if (!existsSync(PYTHON)) return undefined;
  try {
    const script = fileURLToPath(new URL("./torch_train_step.py", import.meta.url));
    const out = execFileSync(PYTHON, [script, JSON.stringify({ model: c.model, batch: c.batch, reps: c.reps, threads: cpus().length, subpixel: true })], { encoding: "utf8", timeout: 1_800_000 });
    return JSON.parse(out.trim().split("\n").at(-1) ?? "") as { stepMs: number; forwardMs: number };
  } catch {
    return undefined;
  }
}

/**
 * An identity graph over every state tensor, run the way StepEngine passes its state: the tensors fed from
 * JS memory, each output written into a pre-allocated second buffer, the two swapping roles between runs. An
 * upper bound of what passing the state costs a step (the copy the identity makes is work a step's optimizer
 * does anyway when it writes the new weights).
 */
async function stateTransferMs(engine: StepEngine, reps: number): Promise<number> {
  const g = new GraphBuilder({ name: "state_identity" });
  const state = engine.exportState();
  let feeds: Record<string, ort.Tensor> = {};
  let spare: Record<string, ort.Tensor> = {};
  for (const [name, data] of state.tensors) {
    const value = g.input(name, "float32", [data.length]);
    g.output(g.op("Identity", [value]), `${name}/out`);
    feeds[name] = new ort.Tensor("float32", data, [data.length]);
    spare[name] = new ort.Tensor("float32", new Float32Array(data.length), [data.length]);
  }
  const session = await ort.InferenceSession.create(encodeModel(g.build()));
  const step = async () => {
    await session.run(feeds, Object.fromEntries(Object.entries(spare).map(([name, tensor]) => [`${name}/out`, tensor])));
    [feeds, spare] = [spare, feeds];
  };
  await step();
  let total = 0;
  for (let i = 0; i < reps; i++) total += await timeMs(step);
  await session.release();
  return total / reps;
}

export async function run(): Promise<void> {
  const rows: string[][] = [];
  for (const c of CASES) {
    const { inputWidth: w, inputHeight: h } = c.model;
    const engine = await StepEngine.create({ model: c.model, training: { batchSize: c.batch, optimizer: { kind: "sgd" } }, seed: 1 });
    const rng = new Rng(3);
    const batch = {
      images: Float32Array.from({ length: c.batch * 3 * h * w }, () => rng.normal()),
      targets: Float32Array.from({ length: c.batch * K * (h / 4) * (w / 4) }, () => rng.uniform()),
      targetWeights: new Float32Array(c.batch * K).fill(1),
    };
    const inference = await ort.InferenceSession.create(encodeModel(engine.inferenceModel()), { graphOptimizationLevel: "all" });
    const input = { input: new ort.Tensor("float32", batch.images, [c.batch, 3, h, w]) };
    const [stepMs, forwardMs] = await compareMs(c.reps, () => engine.run(batch, 1e-3), () => inference.run(input));
    const transferMs = await stateTransferMs(engine, c.reps);
    await inference.release();
    await engine.release();
    const torch = torchPeer(c);
    rows.push([
      c.label,
      String(c.batch),
      fmt(stepMs, 0),
      fmt((c.batch * 1000) / stepMs, 1),
      torch === undefined ? "n/a" : fmt(torch.stepMs, 0),
      torch === undefined ? "n/a" : fmt(torch.stepMs / stepMs),
      fmt(stepMs / forwardMs),
      torch === undefined ? "n/a" : fmt(torch.stepMs / torch.forwardMs),
      `${fmt((100 * transferMs) / stepMs, 1)}%`,
    ]);
  }
  printTable(
    `training step (SGD), onnxruntime CPU vs PyTorch ${existsSync(PYTHON) ? "CPU (Debian build; its fast path: oneDNN convolutions, deconvolutions as convolution + pixel shuffle, as the PyTorch engine runs them)" : "(not installed)"}, ${cpus().length} threads each, medians`,
    ["model", "batch", "ms/step", "samples/s", "torch ms/step", "speed vs torch", "step/forward", "torch step/forward", "state in/out"],
    rows,
  );
}
