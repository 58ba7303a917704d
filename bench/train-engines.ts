/**
 * The trainer's two training engines against each other and against the bare PyTorch loop, in one run: samples/s
 * of the onnxruntime engine (OrtTrainingEngine with its defaults: CPU provider, NCHWc blocked convolutions, one
 * thread per core), of the PyTorch engine (TorchTrainingEngine: a `python -m poseloop_torch` child spoken to over
 * PROTOCOL.md) and of bench/torch_bare_loop.py (the engine's model, optimizer, loss, batch and threads in a plain
 * loop, no protocol). engine / bare is what the service costs on top of PyTorch (goal ≥ 0.95); onnxruntime /
 * PyTorch compares the engines. All three take the same pre-generated batches, take their steps in alternating
 * rounds so drift on a shared machine weighs on each alike, and are timed per step after their warm-up; each
 * figure is the median step. POSELOOP_BENCH_QUICK=1: tiny batches and two steps, to check that it runs;
 * POSELOOP_BENCH_CASES=lite,hrnet: only those cases.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { cpus } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import * as ort from "onnxruntime-node";
import { makeTempDir } from "@poseloop/testkit";
import { Rng, type ModelConfig, type StepBatch, type TrainingGraphConfig } from "@poseloop/train";
import { OrtTrainingEngine, probeTorch, TorchTrainingEngine, type EngineWeights, type TrainingEngine } from "@poseloop/trainer";
// The engines are the trainer's internals (its index exports neither); the benchmark measures exactly them.
import { fmt, median, printTable, timeMs } from "./harness.js";

interface Case {
  readonly label: string;
  readonly model: ModelConfig;
  readonly batch: number;
  readonly warmup: number;
  /** Timed steps per engine: `rounds` rounds of `perRound` steps each. */
  readonly rounds: number;
  readonly perRound: number;
  /** Also the PyTorch engine and bare loop under bf16 autocast (no onnxruntime peer on the CPU). */
  readonly bf16?: boolean;
}

const PYTHON = "/usr/bin/python3";
const K = 17;
const LR = 1e-3;
/** Adam, as the reference recipes (HRNet's and SimpleBaseline's w32/res*_256x192_adam_lr1e-3) and the lite demo train. */
const OPTIMIZER = { kind: "adam" } as const;
/** The lite demo's net (experiments/synthetic/lite_128x96_demo.yaml): four widths, two blocks each, half-resolution heatmaps. */
const LITE = { channels: [16, 32, 64, 128], blocksPerStage: 2, heatmapStride: 2 } as const;
const QUICK = process.env["POSELOOP_BENCH_QUICK"] === "1";
/** Distinct batches cycled through, so no engine trains on one batch over and over. */
const BATCHES = 2;

const FULL_CASES: readonly Case[] = [
  { label: "lite 128x96", model: { architecture: "lite", inputWidth: 96, inputHeight: 128, numKeypoints: K, lite: LITE }, batch: 32, warmup: 3, rounds: 4, perRound: 5, bf16: true },
  { label: "SimpleBaseline-R18 256x192", model: { architecture: "simplebaseline", inputWidth: 192, inputHeight: 256, numKeypoints: K, simpleBaseline: { depth: 18 } }, batch: 32, warmup: 3, rounds: 5, perRound: 1 },
  { label: "HRNet-W32 256x192", model: { architecture: "hrnet", inputWidth: 192, inputHeight: 256, numKeypoints: K, hrnet: { width: 32 } }, batch: 8, warmup: 3, rounds: 5, perRound: 1 },
];
/** POSELOOP_BENCH_CASES=lite,hrnet: only the cases whose label contains one of the words (case-insensitive). */
const ONLY = (process.env["POSELOOP_BENCH_CASES"] ?? "").toLowerCase().split(",").filter((word) => word !== "");
const CASES: readonly Case[] = FULL_CASES.filter((c) => ONLY.length === 0 || ONLY.some((word) => c.label.toLowerCase().includes(word))).map((c) =>
  QUICK ? { ...c, batch: 2, warmup: 1, rounds: 2, perRound: 1 } : c,
);

/** How long one round of bare steps may take before the bare loop counts as hung. */
const BARE_TIMEOUT_MS = 600_000;

interface BareReady {
  readonly torch: string;
  readonly threads: number;
  readonly mkldnn: boolean;
  readonly convKernels: Readonly<Record<string, number>>;
}

/** bench/torch_bare_loop.py as a child: steps on request, their times back. */
class BareLoop {
  readonly ready: BareReady;
  readonly #child: ChildProcessWithoutNullStreams;
  readonly #lines: AsyncIterator<string>;
  readonly #stderr: string[];

  private constructor(child: ChildProcessWithoutNullStreams, lines: AsyncIterator<string>, stderr: string[], ready: BareReady) {
    this.#child = child;
    this.#lines = lines;
    this.#stderr = stderr;
    this.ready = ready;
  }

  static async start(spec: Record<string, unknown>): Promise<BareLoop> {
    const script = fileURLToPath(new URL("./torch_bare_loop.py", import.meta.url));
    const child = spawn(PYTHON, [script, JSON.stringify(spec)], { stdio: ["pipe", "pipe", "pipe"] });
    const stderr: string[] = [];
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => stderr.push(chunk));
    const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    try {
      const ready = (await nextAnswer(lines, stderr)) as unknown as BareReady;
      return new BareLoop(child, lines, stderr, ready);
    } catch (error) {
      child.kill("SIGKILL");
      throw error;
    }
  }

  /** The loss of the last step taken: both sides train the same numbers, so a timing of a diverged run shows. */
  lastLoss = Number.NaN;

  /** Per-step milliseconds of `steps` steps. */
  async steps(steps: number): Promise<number[]> {
    this.#child.stdin.write(`${JSON.stringify({ steps })}\n`);
    const answer = await nextAnswer(this.#lines, this.#stderr);
    this.lastLoss = typeof answer.loss === "number" ? answer.loss : Number.NaN;
    return answer.ms as number[];
  }

  async close(): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.#child.once("exit", () => resolve()));
    this.#child.stdin.end();
    const timer = setTimeout(() => this.#child.kill("SIGKILL"), 5_000);
    await exited;
    clearTimeout(timer);
  }
}

/** The bare loop's next answer line, with a deadline; its last stderr line when it exited instead. */
async function nextAnswer(lines: AsyncIterator<string>, stderr: readonly string[]): Promise<Record<string, unknown>> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the bare loop gave no answer within ${BARE_TIMEOUT_MS / 1000} s`)), BARE_TIMEOUT_MS);
  });
  try {
    const next = await Promise.race([lines.next(), deadline]);
    if (next.done === true) throw new Error(`the bare loop exited: ${stderr.join("").trim().split("\n").at(-1) ?? ""}`);
    return JSON.parse(next.value) as Record<string, unknown>;
  } finally {
    clearTimeout(timer);
  }
}

function randomBatches(c: Case): StepBatch[] {
  const { inputWidth: w, inputHeight: h } = c.model;
  const stride = c.model.lite?.heatmapStride ?? 4;
  const rng = new Rng(3);
  return Array.from({ length: BATCHES }, () => ({
    images: Float32Array.from({ length: c.batch * 3 * h * w }, () => rng.normal()),
    targets: Float32Array.from({ length: c.batch * K * (h / stride) * (w / stride) }, () => Math.max(0, rng.normal() * 0.1)),
    targetWeights: new Float32Array(c.batch * K).fill(1),
  }));
}

/** The engine's starting weights for the bare loop: `<path>.json` lists [name, count] in the order of `<path>.f32`. */
async function writeWeights(path: string, weights: EngineWeights): Promise<string> {
  const tensors = [...weights.params, ...weights.buffers];
  await writeFile(`${path}.json`, JSON.stringify(tensors.map(([name, data]) => [name, data.length])));
  await writeFile(`${path}.f32`, Buffer.concat(tensors.map(([, data]) => Buffer.from(data.buffer, data.byteOffset, data.byteLength))));
  return path;
}

/** One side of the comparison: `steps` of its steps, each one's milliseconds. */
type Stepper = (steps: number) => Promise<number[]>;

function engineStepper(engine: TrainingEngine, batches: readonly StepBatch[], losses?: { last: number }): Stepper {
  let taken = 0;
  return async (steps) => {
    const times: number[] = [];
    for (let i = 0; i < steps; i++) {
      const batch = batches[taken++ % batches.length] as StepBatch;
      times.push(
        await timeMs(async () => {
          const result = await engine.run(batch, LR);
          if (losses !== undefined) losses.last = result.loss;
        }),
      );
    }
    return times;
  };
}

/** Each stepper's median step (ms) over the timed rounds, after its warm-up; the rounds alternate between them. */
async function interleaved(c: Case, steppers: readonly Stepper[]): Promise<number[]> {
  for (const step of steppers) await step(c.warmup);
  const times = steppers.map((): number[] => []);
  for (let round = 0; round < c.rounds; round++) {
    for (const [i, step] of steppers.entries()) times[i]?.push(...(await step(c.perRound)));
  }
  return times.map((t) => median(t));
}

const rate = (c: Case, ms: number): number => (c.batch * 1000) / ms;

export async function run(): Promise<void> {
  const threads = cpus().length;
  const probe = await probeTorch(process.env, { python: PYTHON });
  const torchOk = probe.ok && typeof probe.hello.torch === "string";
  if (!torchOk) process.stdout.write(`\nthe pytorch columns are unavailable: ${probe.ok ? "no torch version in the hello" : probe.reason}\n`);
  const dir = await makeTempDir("poseloop-bench-engines-");
  const rows: string[][] = [];
  let bare: BareReady | undefined;
  let bareBf16: BareReady | undefined;
  let ortDescription = "";
  let torchDescription = "";
  try {
    for (const c of CASES) {
      const training: TrainingGraphConfig = { batchSize: c.batch, optimizer: OPTIMIZER };
      const batches = randomBatches(c);
      await Promise.all(
        batches.flatMap((b, i) => [
          writeFile(join(dir.path, `images-${i}.f32`), b.images),
          writeFile(join(dir.path, `targets-${i}.f32`), b.targets),
          writeFile(join(dir.path, `weights-${i}.f32`), b.targetWeights),
        ]),
      );
      const variants = torchOk && c.bf16 === true ? [false, true] : [false];
      for (const bf16 of variants) {
        const ortEngine = bf16 ? undefined : await OrtTrainingEngine.create({ model: c.model, training, seed: 1 });
        let torchEngine: TorchTrainingEngine | undefined;
        let bareLoop: BareLoop | undefined;
        try {
          if (torchOk) {
            torchEngine = await TorchTrainingEngine.create({ model: c.model, training, seed: 1, device: "cpu", amp: bf16, threads, python: PYTHON, env: process.env });
            const initialWeights = await writeWeights(join(dir.path, "init"), await torchEngine.weights());
            bareLoop = await BareLoop.start({ model: c.model, batch: c.batch, threads, optimizer: OPTIMIZER, lr: LR, bf16, dataDir: dir.path, batches: BATCHES, initialWeights });
            if (bf16) bareBf16 ??= bareLoop.ready;
            else bare ??= bareLoop.ready;
            torchDescription ||= torchEngine.description;
          }
          if (ortEngine !== undefined) ortDescription ||= ortEngine.description;
          const steppers: Stepper[] = [];
          const torchLoss = { last: Number.NaN };
          if (ortEngine !== undefined) steppers.push(engineStepper(ortEngine, batches));
          if (torchEngine !== undefined && bareLoop !== undefined) {
            const loop = bareLoop;
            steppers.push(engineStepper(torchEngine, batches, torchLoss), (steps) => loop.steps(steps));
          }
          const medians = await interleaved(c, steppers);
          const ortMs = ortEngine === undefined ? undefined : medians.shift();
          const [torchMs, bareMs] = medians;
          const cell = (ms: number | undefined) => (ms === undefined ? "n/a" : fmt(rate(c, ms), 1));
          rows.push([
            bf16 ? `${c.label} (bf16 autocast)` : c.label,
            String(c.batch),
            `${c.warmup}+${c.rounds * c.perRound}`,
            bf16 ? "-" : cell(ortMs),
            cell(torchMs),
            cell(bareMs),
            torchMs === undefined || bareMs === undefined ? "n/a" : fmt(bareMs / torchMs),
            torchMs === undefined || ortMs === undefined ? "n/a" : fmt(torchMs / ortMs),
            // Both took the same steps from the same weights: equal losses say the timings are of the same work.
            bareLoop === undefined ? "n/a" : `${torchLoss.last.toExponential(3)} / ${bareLoop.lastLoss.toExponential(3)}`,
          ]);
        } finally {
          await Promise.all([ortEngine?.release(), torchEngine?.release(), bareLoop?.close()]);
        }
      }
    }
  } finally {
    await dir.remove();
  }
  printTable(
    `training engines, samples/s (median step), ${threads} threads each, Adam, fp32 unless marked${QUICK ? " [QUICK: tiny batches, not a measurement]" : ""}`,
    ["model", "batch", "warm+timed steps", "onnxruntime engine", "pytorch engine", "bare pytorch loop", "engine/bare (goal >= 0.95)", "onnxruntime/pytorch engine", "last loss engine / bare"],
    rows,
  );
  const kernels = (ready: BareReady | undefined): string => (ready === undefined ? "none" : Object.entries(ready.convKernels).map(([name, n]) => `${name} x${n}`).join(", "));
  process.stdout.write(
    [
      `onnxruntime engine: ${ortDescription || `onnxruntime ${ort.env.versions.common ?? ""}`}: OrtTrainingEngine defaults (CPU execution provider, NCHWc blocked convolutions, fp32, ${threads} intra-op threads)`,
      torchOk
        ? `pytorch engine: ${torchDescription} (${PYTHON}), threads ${threads}, sub-pixel deconvolution (3x3 conv + pixel_shuffle, the engine's CPU path), single-tensor optimizer; time per step includes the protocol (tensors over the pipe)`
        : "pytorch engine: unavailable",
      bare === undefined
        ? "bare pytorch loop: unavailable"
        : `bare pytorch loop: bench/torch_bare_loop.py, torch ${bare.torch}, ${bare.threads} threads, oneDNN (mkldnn) ${bare.mkldnn ? "enabled" : "off"}, the engine's zoo model with its sub-pixel deconvolution, engine.make_optimizer, JointsMSE, batches in memory; convolution kernels of one profiled step of the first case: ${kernels(bare)}; under bf16 autocast: ${kernels(bareBf16)}`,
      "all three: the same pre-generated random batches (outside the timing); warm-up steps excluded; timed in alternating rounds; the pytorch engine and the bare loop start from the same weights (libs/train's initialization for seed 1, as the onnxruntime engine)",
    ]
      .map((line) => `  ${line}\n`)
      .join(""),
  );
}
