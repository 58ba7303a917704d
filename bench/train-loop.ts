/**
 * The whole training loop against the bare step, same model and batch, in one run: samples/s of the trainer's
 * run (worker thread, data loader with its own worker decoding, cropping, augmenting and encoding targets,
 * LR schedule, progress) against the StepRunner fed with batches already in memory. A ratio under 1 is what
 * the loop costs on top of the step; data loading must not starve the step (target >= 0.85).
 */
import { readFile } from "node:fs/promises";
import { toBinary } from "@bufbuild/protobuf";
import { TrainConfigSchema } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { Rng, StepRunner } from "@poseloop/train";
import { prepareExperiment, runContract, TrainingSession } from "@poseloop/trainer";
import { fmt, printTable } from "./harness.js";

const STEPS = 60;

export async function run(): Promise<void> {
  const path = process.env["POSELOOP_BENCH_EXPERIMENT"] ?? "experiments/synthetic/lite_128x96_demo.yaml";
  const { config, problems } = await prepareExperiment(await readFile(path, "utf8"));
  if (config === undefined) throw new Error(problems.join("\n"));
  const workDir = process.env["POSELOOP_WORK_DIR"] ?? ".poseloop/work";
  const contract = runContract(config);
  const batch = config.batchSize;
  const rows: string[][] = [];

  // The loop: the trainer's own run (data generated on first use, outside the timing).
  const session = await TrainingSession.start({ jobId: "bench", config: toBinary(TrainConfigSchema, config), roots: { dataRoot: workDir, workDir } });
  let loopRate = 0;
  try {
    await session.train(5);
    const chunk = await session.train(STEPS);
    loopRate = chunk.samples / chunk.seconds;
  } finally {
    await session.close();
  }

  // The bare step: the same graphs in a StepRunner worker, batches prepared in memory beforehand.
  const { inputWidth: w, inputHeight: h } = contract.spec;
  const heatmap = contract.spec.codec.kind === "heatmap" ? contract.spec.codec.heatmapSize : { width: w / 4, height: h / 4 };
  const k = contract.spec.numKeypoints;
  const runner = await StepRunner.create({
    model: contract.modelConfig,
    training: { batchSize: batch, gradAccumSteps: config.gradAccumSteps, clipGradNorm: config.clipGradNorm, optimizer: { kind: "adam" } },
    seed: 1,
    ...(config.intraOpThreads > 0 ? { intraOpThreads: config.intraOpThreads } : {}),
  });
  let bareRate = 0;
  try {
    const rng = new Rng(5);
    const batches = Array.from({ length: 4 }, () => ({
      images: Float32Array.from({ length: batch * 3 * w * h }, () => rng.normal()),
      targets: Float32Array.from({ length: batch * k * heatmap.width * heatmap.height }, () => Math.max(0, rng.normal() * 0.1)),
      targetWeights: new Float32Array(batch * k).fill(1),
    }));
    for (let i = 0; i < 5; i++) await runner.run(batches[i % 4] as (typeof batches)[number], 1e-3);
    const start = performance.now();
    for (let i = 0; i < STEPS; i++) await runner.run(batches[i % 4] as (typeof batches)[number], 1e-3);
    bareRate = (STEPS * batch) / ((performance.now() - start) / 1000);
  } finally {
    await runner.release();
  }
  rows.push([`${contract.modelConfig.architecture} ${h}x${w}`, String(batch), String(config.loaderWorkers), fmt(loopRate, 1), fmt(bareRate, 1), fmt(loopRate / bareRate, 2)]);
  printTable(`training loop vs bare StepRunner (${path}, ${STEPS} steps)`, ["model", "batch", "loader workers", "loop samples/s", "bare samples/s", "ratio"], rows);
}
