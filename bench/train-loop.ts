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

const STEPS = 30;
const ROUNDS = 5;

export async function run(): Promise<void> {
  const path = process.env["POSELOOP_BENCH_EXPERIMENT"] ?? "experiments/synthetic/lite_128x96_demo.yaml";
  const { config, problems } = await prepareExperiment(await readFile(path, "utf8"));
  if (config === undefined) throw new Error(problems.join("\n"));
  const workDir = process.env["POSELOOP_WORK_DIR"] ?? ".poseloop/work";
  const contract = runContract(config);
  if (contract.kind !== "pose") throw new Error("this bench measures pose models");
  const rows: string[][] = [];

  // The loop: the trainer's own run (data generated on first use, outside the timing). The bare step: the same
  // graphs in a StepRunner worker, batches prepared in memory beforehand. Rounds alternate between the two so
  // that whatever else this machine is doing weighs on both alike; each side's rate is its median round.
  const session = await TrainingSession.start({ jobId: "bench", config: toBinary(TrainConfigSchema, config), roots: { dataRoot: workDir, workDir } });
  // A loader batch: every data-parallel replica's batch_size samples.
  const batch = session.position.samplesPerBatch;
  const { inputWidth: w, inputHeight: h } = contract.spec;
  const heatmap = contract.spec.codec.kind === "heatmap" ? contract.spec.codec.heatmapSize : { width: w / 4, height: h / 4 };
  const k = contract.spec.numKeypoints;
  const runner = await StepRunner.create({
    model: contract.modelConfig,
    training: { batchSize: config.batchSize, gradAccumSteps: config.gradAccumSteps, clipGradNorm: config.clipGradNorm, optimizer: { kind: "adam" } },
    seed: 1,
    ...(config.replicas > 1 ? { replicas: config.replicas } : {}),
    ...(config.intraOpThreads > 0 ? { intraOpThreads: config.intraOpThreads } : {}),
  });
  const loopRates: number[] = [];
  const bareRates: number[] = [];
  try {
    const rng = new Rng(5);
    const batches = Array.from({ length: 4 }, () => ({
      images: Float32Array.from({ length: batch * 3 * w * h }, () => rng.normal()),
      targets: Float32Array.from({ length: batch * k * heatmap.width * heatmap.height }, () => Math.max(0, rng.normal() * 0.1)),
      targetWeights: new Float32Array(batch * k).fill(1),
    }));
    await session.train(5);
    for (let i = 0; i < 5; i++) await runner.run(batches[i % 4] as (typeof batches)[number], 1e-3);
    for (let round = 0; round < ROUNDS; round++) {
      const chunk = await session.train(STEPS);
      loopRates.push(chunk.samples / chunk.seconds);
      const start = performance.now();
      for (let i = 0; i < STEPS; i++) await runner.run(batches[i % 4] as (typeof batches)[number], 1e-3);
      bareRates.push((STEPS * batch) / ((performance.now() - start) / 1000));
    }
  } finally {
    await Promise.all([session.close(), runner.release()]);
  }
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;
  const loopRate = median(loopRates);
  const bareRate = median(bareRates);
  rows.push([`${contract.modelConfig.architecture} ${h}x${w}`, String(batch), String(config.loaderWorkers), fmt(loopRate, 1), fmt(bareRate, 1), fmt(loopRate / bareRate, 2)]);
  printTable(`training loop vs bare StepRunner (${path}, ${ROUNDS} alternating rounds of ${STEPS} steps, median rounds)`, ["model", "batch", "loader workers", "loop samples/s", "bare samples/s", "ratio"], rows);
}
