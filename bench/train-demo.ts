import { readFile } from "node:fs/promises";
import { toBinary, fromBinary } from "@bufbuild/protobuf";
import { KeypointMetricsSchema } from "@poseloop/proto/poseloop/common/v1/metrics_pb";
import { TrainConfigSchema } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { evaluateModel, PoseEstimator } from "@poseloop/estimator";
import { keypointErrors } from "@poseloop/pose";
import { prepareData, prepareExperiment, runContract, TrainingSession } from "@poseloop/trainer";
import { fmt, printTable } from "./harness.js";

/**
 * The learning proof of the demo: trains experiments/synthetic/lite_128x96_demo.yaml (or the file given in
 * POSELOOP_BENCH_EXPERIMENT) from scratch, validating every epoch, and prints the AP curve, the wall time and
 * the fp32 and int8 AP of the best checkpoint, then where that checkpoint misses (per keypoint: mean OKS term,
 * misses, and how many misses are left/right swaps). The target: AP >= 0.70 within 10 minutes on 2 cores.
 */
export async function run(): Promise<void> {
  const path = process.env["POSELOOP_BENCH_EXPERIMENT"] ?? "experiments/synthetic/lite_128x96_demo.yaml";
  const { config, problems } = await prepareExperiment(await readFile(path, "utf8"));
  if (config === undefined) throw new Error(problems.join("\n"));
  const workDir = process.env["POSELOOP_WORK_DIR"] ?? ".poseloop/work";
  const started = performance.now();
  const session = await TrainingSession.start({ jobId: "bench", config: toBinary(TrainConfigSchema, config), roots: { dataRoot: workDir, workDir } });
  const ready = performance.now();
  const rows: string[][] = [];
  let best: Uint8Array | undefined;
  try {
    while (session.position.epoch < config.endEpoch) {
      const epochStart = performance.now();
      let samples = 0;
      let loss = 0;
      let chunks = 0;
      for (;;) {
        const chunk = await session.train(50);
        samples += chunk.samples;
        loss += chunk.loss;
        chunks++;
        if (chunk.epochEnded) break;
      }
      const trainSeconds = (performance.now() - epochStart) / 1000;
      const validation = await session.validate();
      if (validation.isBest) best = (await session.checkpoint()).bytes;
      const m = fromBinary(KeypointMetricsSchema, validation.metrics);
      rows.push([String(session.position.epoch), fmt(loss / chunks, 5), fmt(samples / trainSeconds, 1), fmt(m.ap, 3), fmt(m.ap50, 3), fmt(validation.durationMs / 1000, 1), fmt((performance.now() - started) / 1000, 0)]);
      process.stdout.write(`epoch ${session.position.epoch}: AP ${fmt(m.ap, 3)} (${fmt((performance.now() - started) / 1000, 0)} s)\n`);
    }
    printTable(`demo training (${path}); data ready after ${fmt((ready - started) / 1000, 1)} s`, ["epoch", "loss", "samples/s", "AP", "AP50", "val s", "elapsed s"], rows);
    const exported = await session.export(best);
    const fp32 = fromBinary(KeypointMetricsSchema, exported.fp32Metrics).ap;
    const int8 = exported.int8Metrics === undefined ? Number.NaN : fromBinary(KeypointMetricsSchema, exported.int8Metrics).ap;
    printTable("best checkpoint: fp32 vs int8", ["fp32 AP", "int8 AP", "drop (points)", "gate", "fp32 bytes", "int8 bytes", "size ratio"], [
      [fmt(fp32, 3), fmt(int8, 3), fmt((fp32 - int8) * 100, 2), exported.gate?.message ?? "-", String(exported.sizes.fp32), String(exported.sizes.int8), fmt(exported.sizes.int8 / exported.sizes.fp32, 3)],
    ]);
    process.stdout.write(`total ${fmt((performance.now() - started) / 1000, 0)} s\n`);
    await printKeypointErrors(config, workDir, exported.fp32);
  } finally {
    await session.close();
  }
}

/** The best checkpoint's misses per keypoint on the validation set (after the timed run: not in its wall time). */
async function printKeypointErrors(config: Parameters<typeof runContract>[0], workDir: string, fp32: Uint8Array): Promise<void> {
  const contract = runContract(config);
  if (contract.kind !== "pose") throw new Error("this bench measures pose models");
  const { validation } = await prepareData(config, { dataRoot: workDir, workDir }, contract.schema);
  const estimator = new PoseEstimator({ intraOpThreads: 1, maxPixels: 64 * 1024 * 1024 });
  try {
    await estimator.load({ ...contract.spec, version: "best" }, fp32);
    const evaluation = await evaluateModel(estimator, "best", validation, { flipTest: config.validation?.flipTest ?? false });
    const report = keypointErrors(validation.groundTruths, evaluation.detections, contract.schema);
    printTable(
      `where the best checkpoint misses (${report.matched} people; a miss: the keypoint's OKS term under 0.5)`,
      ["keypoint", "labelled", "mean OKS", "missed", "L/R swaps of the misses"],
      report.keypoints.map((k) => [k.name, String(k.labelled), fmt(k.meanOks, 3), `${fmt(100 * k.missRate, 1)}%`, `${fmt(100 * k.swapRate, 0)}%`]),
    );
  } finally {
    await estimator.close();
  }
}
