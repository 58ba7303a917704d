import { readFile } from "node:fs/promises";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { KeypointMetricsSchema } from "@poseloop/proto/poseloop/common/v1/metrics_pb";
import { TrainConfigSchema } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { prepareExperiment, probeTorch, TrainingSession } from "@poseloop/trainer";
import { fmt, printTable } from "./harness.js";

/**
 * The engines' parity where it matters to a user: the demo experiment (or POSELOOP_BENCH_EXPERIMENT) trained
 * from scratch by the onnxruntime engine and by the PyTorch engine on the CPU — once fed by the trainer's
 * loader, once loading its own batches (TRAIN.DATA_LOADER engine) —, the same config, seed, batches and number of
 * samples, each validated every epoch through the same serving pipeline. Prints the AP curves, each run's
 * samples/s and the differences of the final APs (goal: within 0.02). Both engines use their default paths:
 * onnxruntime's blocked (NCHWc) convolutions; torch's oneDNN convolutions with the sub-pixel deconvolution.
 * Long (three times the demo's training): a benchmark, never a test.
 */
export async function run(): Promise<void> {
  const path = process.env["POSELOOP_BENCH_EXPERIMENT"] ?? "experiments/synthetic/lite_128x96_demo.yaml";
  const workDir = process.env["POSELOOP_WORK_DIR"] ?? ".poseloop/work";
  const torch = await probeTorch(process.env);
  if (!torch.ok) {
    process.stdout.write(`train-parity: no Python with torch (${torch.reason}); nothing to compare\n`);
    return;
  }
  // The third run: the PyTorch engine loading its own batches (TRAIN.DATA_LOADER engine, its default on GPUs).
  const runs = [
    { name: "onnxruntime", overrides: { "TRAIN.ENGINE": "onnxruntime" } },
    { name: "pytorch", overrides: { "TRAIN.ENGINE": "pytorch", "TRAIN.DATA_LOADER": "trainer" } },
    { name: "pytorch, engine loader", overrides: { "TRAIN.ENGINE": "pytorch", "TRAIN.DATA_LOADER": "engine" } },
  ] as const;
  const curves = new Map<string, { ap: number[]; samplesPerSecond: number; engine: string; seconds: number }>();
  for (const { name, overrides } of runs) {
    const { config, problems } = await prepareExperiment(await readFile(path, "utf8"), { overrides });
    if (config === undefined) throw new Error(problems.join("\n"));
    const started = performance.now();
    const session = await TrainingSession.start({ jobId: `parity-${name.replace(/\W+/g, "-")}`, config: toBinary(TrainConfigSchema, config), roots: { dataRoot: workDir, workDir }, python: torch.python, env: process.env });
    const ap: number[] = [];
    let samples = 0;
    let trainSeconds = 0;
    try {
      while (session.position.epoch < config.endEpoch) {
        for (;;) {
          const chunk = await session.train(50);
          samples += chunk.samples;
          trainSeconds += chunk.seconds;
          if (chunk.epochEnded) break;
        }
        const validation = await session.validate();
        ap.push(fromBinary(KeypointMetricsSchema, validation.metrics).ap);
        process.stdout.write(`${name} epoch ${session.position.epoch}: AP ${fmt(ap.at(-1) ?? 0, 3)} (${fmt((performance.now() - started) / 1000, 0)} s)\n`);
      }
      curves.set(name, { ap, samplesPerSecond: samples / trainSeconds, engine: `${session.position.engine}${name.endsWith("loader") ? ", engine loader" : ""}`, seconds: (performance.now() - started) / 1000 });
    } finally {
      await session.close();
    }
  }
  const ort = curves.get("onnxruntime");
  const pt = curves.get("pytorch");
  const ptLoader = curves.get("pytorch, engine loader");
  if (ort === undefined || pt === undefined || ptLoader === undefined) return;
  printTable(
    `AP per epoch, ${path}: onnxruntime engine vs PyTorch engine (batches from the trainer, and from its own loader), same config, seed and samples`,
    ["epoch", "AP onnxruntime", "AP pytorch", "difference", "AP pytorch, engine loader", "difference"],
    ort.ap.map((a, i) => [String(i + 1), fmt(a, 3), fmt(pt.ap[i] ?? Number.NaN, 3), fmt((pt.ap[i] ?? Number.NaN) - a, 3), fmt(ptLoader.ap[i] ?? Number.NaN, 3), fmt((ptLoader.ap[i] ?? Number.NaN) - a, 3)]),
  );
  const final = (pt.ap.at(-1) ?? Number.NaN) - (ort.ap.at(-1) ?? Number.NaN);
  const finalLoader = (ptLoader.ap.at(-1) ?? Number.NaN) - (ort.ap.at(-1) ?? Number.NaN);
  printTable("the engines", ["engine", "samples/s (training)", "wall s", "final AP", "best AP"], [
    [ort.engine, fmt(ort.samplesPerSecond, 1), fmt(ort.seconds, 0), fmt(ort.ap.at(-1) ?? Number.NaN, 3), fmt(Math.max(...ort.ap), 3)],
    [pt.engine, fmt(pt.samplesPerSecond, 1), fmt(pt.seconds, 0), fmt(pt.ap.at(-1) ?? Number.NaN, 3), fmt(Math.max(...pt.ap), 3)],
    [ptLoader.engine, fmt(ptLoader.samplesPerSecond, 1), fmt(ptLoader.seconds, 0), fmt(ptLoader.ap.at(-1) ?? Number.NaN, 3), fmt(Math.max(...ptLoader.ap), 3)],
  ]);
  for (const [what, difference] of [["pytorch", final], ["pytorch, engine loader", finalLoader]] as const) {
    process.stdout.write(`final AP difference (${what} - onnxruntime): ${fmt(difference, 3)} — ${Math.abs(difference) <= 0.02 ? "within" : "OUTSIDE"} the 0.02 goal\n`);
  }
}
