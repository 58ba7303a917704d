import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { KeypointMetricsSchema } from "@poseloop/proto/poseloop/common/v1/metrics_pb";
import { ModelManifestSchema, Precision } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { TrainConfigSchema } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { create } from "@bufbuild/protobuf";
import { manifestYaml, prepareExperiment, servingManifest, TrainingSession } from "@poseloop/trainer";

/**
 * Trains the shipped person detector with the trainer's own run (the worker a training job runs in): the recipe
 * from its first epoch to its last, validated every epoch by box AP, the best epoch exported through the int8
 * gate. Writes model.int8.onnx and its manifest.yaml (the import format, as a training job's publication
 * describes the model) to models/person-detector/, the fp32 model and the per-epoch metrics to OUT (default
 * .poseloop/person-detector; MODEL_DIR replaces models/person-detector/). Usage, from the repository root:
 *   node --conditions=@poseloop/source --import tsx scripts/train-person-detector.ts [RECIPE] [--manifest-only]
 */
const args = process.argv.slice(2);
const recipe = args.find((arg) => !arg.startsWith("--")) ?? "experiments/synthetic/detector_lite_shipped.yaml";
const workDir = process.env["POSELOOP_WORK_DIR"] ?? ".poseloop/work";
const outDir = process.env["OUT"] ?? ".poseloop/person-detector";
// MODEL_DIR lets a candidate be trained beside the shipped one and compared before it replaces it.
const modelDir = process.env["MODEL_DIR"] ?? new URL("../models/person-detector/", import.meta.url).pathname;
await mkdir(modelDir, { recursive: true });

const { config, problems } = await prepareExperiment(await readFile(recipe, "utf8"));
if (config === undefined) throw new Error(problems.join("\n"));
const manifest = create(ModelManifestSchema, servingManifest(config, Precision.INT8));
await writeFile(join(modelDir, "manifest.yaml"), manifestYaml(manifest, `The person detector trained by ${recipe} (models/person-detector/README.md).\nImport: poseloop import model.int8.onnx --name person-detector --manifest manifest.yaml`));
if (args.includes("--manifest-only")) process.exit(0);
const started = performance.now();
const session = await TrainingSession.start({ jobId: "person-detector", config: toBinary(TrainConfigSchema, config), roots: { dataRoot: workDir, workDir } });
const epochs: Record<string, number>[] = [];
try {
  let best: { bytes: Uint8Array; epoch: number } | undefined;
  while (session.position.epoch < config.endEpoch) {
    let loss = 0;
    let chunks = 0;
    for (;;) {
      const chunk = await session.train(50);
      loss += chunk.loss;
      chunks++;
      if (chunk.epochEnded) break;
    }
    const validation = await session.validate();
    const m = fromBinary(KeypointMetricsSchema, validation.metrics);
    const row = { epoch: session.position.epoch, loss: loss / chunks, ap: m.ap, ap50: m.ap50, ap75: m.ap75, ar50: m.ar50, apMedium: m.apMedium, seconds: (performance.now() - started) / 1000 };
    epochs.push(row);
    process.stdout.write(`${JSON.stringify(row)}\n`);
    if (validation.isBest) best = { bytes: (await session.checkpoint()).bytes, epoch: row.epoch };
  }
  if (best === undefined) throw new Error("no epoch was validated");
  const outcome = await session.export(best.epoch === session.position.epoch ? undefined : best.bytes);
  if (outcome.int8 === undefined) throw new Error(`the int8 gate failed: ${outcome.gate?.message ?? "no int8 model"}`);
  await mkdir(outDir, { recursive: true });
  await writeFile(join(outDir, "model.fp32.onnx"), outcome.fp32);
  await writeFile(join(modelDir, "model.int8.onnx"), outcome.int8);
  const metrics = (bytes: Uint8Array | undefined) => (bytes === undefined ? undefined : fromBinary(KeypointMetricsSchema, bytes));
  const summary = { recipe, bestEpoch: best.epoch, epochs, fp32: metrics(outcome.fp32Metrics), int8: metrics(outcome.int8Metrics), gate: outcome.gate, sizes: outcome.sizes, seconds: (performance.now() - started) / 1000 };
  await writeFile(join(outDir, "training.json"), JSON.stringify(summary, (_, v: unknown) => (typeof v === "bigint" ? Number(v) : v), 2));
  process.stdout.write(`best epoch ${best.epoch}; int8 ${outcome.sizes.int8} bytes; ${summary.seconds.toFixed(0)} s\n`);
} finally {
  await session.close();
}
