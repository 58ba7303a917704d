import { readFile } from "node:fs/promises";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { KeypointMetricsSchema } from "@poseloop/proto/poseloop/common/v1/metrics_pb";
import { TrainConfigSchema, type TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { prepareExperiment, TrainingSession } from "@poseloop/trainer";
import { fmt, printTable } from "./harness.js";

/**
 * TRAIN.EMA on vs off: the demo recipe (experiments/synthetic/lite_128x96_demo.yaml, or POSELOOP_BENCH_EXPERIMENT)
 * trained twice from the same seed, without and with the moving average, validated every epoch; prints the AP
 * of each per epoch, the best of each and their ratio. The average never changes the trained weights, so both
 * runs see the same samples and take the same steps — the bench checks that their losses are bit-identical.
 * The average's settings: POSELOOP_BENCH_EMA_DECAY (default 0.9999) and POSELOOP_BENCH_EMA_WARMUP (default 2000,
 * the trainer's defaults); POSELOOP_BENCH_EMA_ARMS=on|off trains one arm alone. POSELOOP_BENCH_QUICK=1: 2 epochs of 64 pictures of the same recipe at one replica,
 * decay 0.9 without warm-up, to check that it runs (its AP means nothing).
 */
export async function run(): Promise<void> {
  const quick = process.env["POSELOOP_BENCH_QUICK"] === "1";
  const path = process.env["POSELOOP_BENCH_EXPERIMENT"] ?? "experiments/synthetic/lite_128x96_demo.yaml";
  const decay = process.env["POSELOOP_BENCH_EMA_DECAY"] ?? (quick ? "0.9" : "0.9999");
  const warmup = process.env["POSELOOP_BENCH_EMA_WARMUP"] ?? (quick ? "0" : "2000");
  const overrides: Record<string, string> = {
    // The AP compared is the fp32 model's, measured by validation; the int8 gate would only add time.
    "QUANT.ENABLED": "false",
    ...(quick ? { "DATASET.SYNTHETIC.TRAIN_IMAGES": "64", "DATASET.SYNTHETIC.VAL_IMAGES": "16", "DATASET.NAME": "synthetic-ema-quick", "TRAIN.END_EPOCH": "2", "TRAIN.REPLICAS": "1", "TRAIN.WARMUP_STEPS": "4" } : {}),
  };
  const text = await readFile(path, "utf8");
  const load = async (extra: Record<string, string>): Promise<TrainConfig> => {
    const { config, problems } = await prepareExperiment(text, { overrides: { ...overrides, ...extra } });
    if (config === undefined) throw new Error(problems.join("\n"));
    return config;
  };
  const off = await load({});
  const on = await load({ "TRAIN.EMA.DECAY": decay, "TRAIN.EMA.WARMUP": warmup });
  const workDir = process.env["POSELOOP_WORK_DIR"] ?? ".poseloop/work";
  // POSELOOP_BENCH_EMA_ARMS=on (or off) trains one arm alone, to finish a comparison whose other arm an earlier
  // run of the same recipe measured (training is deterministic: the two arms' losses are bit-identical).
  const arms = process.env["POSELOOP_BENCH_EMA_ARMS"] ?? "both";
  if (arms === "on" || arms === "off") {
    const alone = await train(`ema-${arms}`, arms === "on" ? on : off, workDir);
    printTable(`TRAIN.EMA ${arms} alone (DECAY ${decay}, WARMUP ${warmup}) on the ${path} recipe: validation AP per epoch`, ["epoch", `AP ${arms}`], alone.aps.map((ap, i) => [String(i + 1), fmt(ap, 3)]));
    printTable("best epoch", [`AP ${arms}`, "train s"], [[fmt(Math.max(...alone.aps), 3), fmt(alone.seconds, 0)]]);
    return;
  }
  const plain = await train("ema-off", off, workDir);
  const averaged = await train("ema-on", on, workDir);
  const rows = plain.aps.map((ap, i) => {
    const withEma = averaged.aps[i] ?? Number.NaN;
    return [String(i + 1), fmt(ap, 3), fmt(withEma, 3), ratio(withEma, ap)];
  });
  printTable(`TRAIN.EMA (DECAY ${decay}, WARMUP ${warmup}) on the ${path} recipe${quick ? " (quick)" : ""}: validation AP per epoch`, ["epoch", "AP off", "AP on", "on / off"], rows);
  const bestOff = Math.max(...plain.aps);
  const bestOn = Math.max(...averaged.aps);
  printTable("best epoch", ["AP off", "AP on", "on / off", "same losses, bit for bit", "train s off", "train s on"], [
    [fmt(bestOff, 3), fmt(bestOn, 3), ratio(bestOn, bestOff), String(plain.losses.length === averaged.losses.length && plain.losses.every((loss, i) => Object.is(loss, averaged.losses[i]))), fmt(plain.seconds, 0), fmt(averaged.seconds, 0)],
  ]);
}

/** on / off, or "-" where the run without the average found nobody (a quick run's AP is 0). */
function ratio(on: number, off: number): string {
  return off > 0 ? fmt(on / off, 3) : "-";
}

/** Trains `config` to its end, validating every epoch: the APs, every chunk's mean loss and the wall time. */
async function train(jobId: string, config: TrainConfig, workDir: string): Promise<{ aps: number[]; losses: number[]; seconds: number }> {
  const started = performance.now();
  const session = await TrainingSession.start({ jobId, config: toBinary(TrainConfigSchema, config), roots: { dataRoot: workDir, workDir } });
  const aps: number[] = [];
  const losses: number[] = [];
  try {
    while (session.position.epoch < config.endEpoch) {
      for (;;) {
        const chunk = await session.train(50);
        losses.push(chunk.loss);
        if (chunk.epochEnded) break;
      }
      const validation = await session.validate();
      aps.push(fromBinary(KeypointMetricsSchema, validation.metrics).ap);
      process.stdout.write(`${jobId} epoch ${session.position.epoch}: AP ${fmt(aps.at(-1) ?? Number.NaN, 3)}\n`);
    }
    return { aps, losses, seconds: (performance.now() - started) / 1000 };
  } finally {
    await session.close();
  }
}
