/**
 * Streams without client boxes: the inferencer finding the people itself (person_source DETECTOR: decode →
 * letterbox → detector → NMS → crops → pose model), against the same pipeline as plain onnxruntime calls in
 * one process, in one run. Frames/s (saturated) and p50/p99 latency (lock-step) at 1 and 8 streams, with the
 * int8 detector + pose model and with the fp32 ones; then the detector's box AP and the pose model's AP with
 * detected boxes vs ground-truth boxes on the synthetic multi-person validation set.
 *
 * The models are trained here, through the trainer's own code path (a TrainingSession, as a job runs them):
 * the detector with experiments/synthetic/detector_lite_demo.yaml (POSELOOP_BENCH_DETECTOR_EXPERIMENT), the pose
 * model with experiments/synthetic/lite_128x96_demo.yaml (POSELOOP_BENCH_EXPERIMENT). POSELOOP_BENCH_DETECTOR: a
 * folder with a detector already trained by that detector recipe (model.onnx and/or model.int8.onnx, as a
 * shipped detector is laid out); its manifest is the recipe's. POSELOOP_BENCH_QUICK=1: the detector trained for
 * 3 epochs of 320 pictures, the pose model for one of 64, 16 validation pictures, fewer frames: it checks that
 * the bench runs; its APs and ratios mean little.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { ModelRegistry, openBus } from "@poseloop/bus";
import { silentLogger } from "@poseloop/core";
import { generateSyntheticDataset, readCocoKeypoints, renderSyntheticScene, SeededRandom, type CocoKeypointDataset, type ValidationImage } from "@poseloop/data";
import { decodeDetections, detectorInput, type DetectorOutput } from "@poseloop/detect";
import { evaluateModel, evaluationSetFromCoco, PoseEstimator, servingSpecFromManifest, type ServingSpec } from "@poseloop/estimator";
import { createClient } from "@poseloop/grpc";
import { loadConfig, startInferencer } from "@poseloop/inferencer";
import { jpegFrame, streamRequests, type InferenceClient } from "@poseloop/inferencer/testing";
import { createKeypointCodec, decodeToFrame, evaluateBoxes, type CocoBoxDetection, type KeypointCodec } from "@poseloop/pose";
import { KeypointMetricsSchema } from "@poseloop/proto/poseloop/common/v1/metrics_pb";
import { ModelManifestSchema, ModelRefSchema, Precision, type DetectorSpec, type ModelManifest } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { DeliveryMode, InferenceService, PersonSource, type Frame } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { TrainConfigSchema, type TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { DETECTION_SCENES, prepareExperiment, servingManifest, TrainingSession, type ExportOutcome } from "@poseloop/trainer";
import { makeTempDir } from "@poseloop/testkit";
import { cropPerson, decodeImage, encodeJpeg, warpToTensor, type RgbImage, type TensorNormalization } from "@poseloop/vision";
import { fmt, printTable } from "./harness.js";
import { percentileOf } from "./stream.js";

const QUICK = process.env["POSELOOP_BENCH_QUICK"] === "1";
const FRAME_W = 256;
const FRAME_H = 192;
const FRAMES_PER_STREAM = QUICK ? 40 : 240;
const LOCKSTEP_FRAMES = QUICK ? 30 : 120;
// The server's workers and their threads; the peer gets the same threads in total, in one session each.
const WORKERS = 2;
const INTRA_OP_THREADS = 1;
const MAX_BATCH = 8;
/** Boxes kept per picture for box AP: COCO's AP integrates precision over every recall (as the trainer's evaluator). */
const AP_SCORE_THRESHOLD = 0.01;

/** A model trained here (or given), as the registry gets it: its manifest and its fp32 / int8 ONNX bytes. */
interface TrainedModel {
  readonly config: TrainConfig;
  readonly fp32: Uint8Array | undefined;
  readonly int8: Uint8Array | undefined;
  /** The trainer's own validation of the exported models (box AP for a detector), where it ran one. */
  readonly trainerAp: { fp32?: number; int8?: number };
  readonly seconds: number;
}

type Variant = "int8" | "fp32";

export async function run(): Promise<void> {
  const workDir = process.env["POSELOOP_WORK_DIR"] ?? ".poseloop/work";
  const detectorRecipe = process.env["POSELOOP_BENCH_DETECTOR_EXPERIMENT"] ?? "experiments/synthetic/detector_lite_demo.yaml";
  const poseRecipe = process.env["POSELOOP_BENCH_EXPERIMENT"] ?? "experiments/synthetic/lite_128x96_demo.yaml";
  const given = process.env["POSELOOP_BENCH_DETECTOR"];
  const quickOverrides = (name: string, trainImages: number, epochs: number): Record<string, string> =>
    QUICK
      ? {
          "DATASET.SYNTHETIC.TRAIN_IMAGES": String(trainImages),
          "DATASET.SYNTHETIC.VAL_IMAGES": "16",
          "DATASET.NAME": name,
          "TRAIN.END_EPOCH": String(epochs),
          "TRAIN.REPLICAS": "1",
          "TRAIN.WARMUP_STEPS": "2",
          "QUANT.CALIBRATION_SAMPLES": "16",
          // One epoch's model is near-random: its int8 copy must exist for the timings, whatever its AP.
          "QUANT.MAX_AP_DROP": "100",
        }
      : {};
  // A detector that finds nobody would leave the crops and the pose model out of the timings: the quick one
  // gets enough steps to put boxes on some people.
  const detectorConfig = await loadRecipe(detectorRecipe, quickOverrides("synthetic-detector-bench-quick", 320, 3));
  const poseConfig = await loadRecipe(poseRecipe, quickOverrides("synthetic-pose-bench-quick", 64, 1));
  const detector = given === undefined ? await train("bench-detector", detectorConfig, workDir) : await readGiven(given, detectorConfig);
  const pose = await train("bench-pose", poseConfig, workDir);
  const variants = (["int8", "fp32"] as const).filter((v) => detector[v] !== undefined && pose[v] !== undefined);
  process.stdout.write(
    `detector: ${given === undefined ? `trained here from ${detectorRecipe}${QUICK ? " (quick: 3 epochs of 320 pictures)" : ""} in ${fmt(detector.seconds, 0)} s` : `given (${given}), manifest from ${detectorRecipe}`}; ` +
      `pose model: trained here from ${poseRecipe}${QUICK ? " (quick: 1 epoch, 64 pictures)" : ""} in ${fmt(pose.seconds, 0)} s; precisions: ${variants.join(", ")}\n`,
  );

  const dir = await makeTempDir("poseloop-bench-stream-detect-");
  const busDir = `${dir.path}/bus`;
  const bus = await openBus({ natsServers: [], embeddedDir: busDir });
  try {
    const registry = await ModelRegistry.open(bus, silentLogger);
    const manifests: Record<string, { detector: ModelManifest; pose: ModelManifest }> = {};
    for (const variant of variants) {
      manifests[variant] = {
        detector: await publish(registry, `detector-${variant}`, detector, variant),
        pose: await publish(registry, `pose-${variant}`, pose, variant),
      };
    }
    const data = await scenes(48);
    const rows: string[][] = [];
    for (const variant of variants) {
      const models = manifests[variant] as { detector: ModelManifest; pose: ModelManifest };
      const inferencer = await startInferencer(
        loadConfig({
          POSELOOP_INFERENCER_LISTEN: "127.0.0.1:0",
          POSELOOP_BUS_DIR: busDir,
          POSELOOP_MODEL: `pose-${variant}`,
          POSELOOP_DETECTOR_MODEL: `detector-${variant}`,
          POSELOOP_INFERENCE_WORKERS: String(WORKERS),
          POSELOOP_INTRA_OP_THREADS: String(INTRA_OP_THREADS),
          POSELOOP_MAX_BATCH: String(MAX_BATCH),
          POSELOOP_FRAME_TRACE_RATIO: "0",
        }),
        silentLogger,
      );
      const client: InferenceClient = createClient(InferenceService, `127.0.0.1:${inferencer.address.port}`);
      try {
        await inferencer.models.waitForServing(60_000);
        const deadline = Date.now() + 60_000;
        while (inferencer.detectors?.current === undefined) {
          if (Date.now() > deadline) throw new Error(`detector-${variant} did not start serving in 60 s`);
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        const peer = await PeerPipeline.create(models.detector, await bytesOf(detector, variant), models.pose, await bytesOf(pose, variant));
        try {
          for (const streams of [1, 8]) {
            const frames = streams === 1 ? FRAMES_PER_STREAM * 2 : FRAMES_PER_STREAM;
            await served(client, data, streams, 8);
            const ours = await served(client, data, streams, frames);
            const paced = await served(client, data, streams, LOCKSTEP_FRAMES, { lockstep: true });
            // The peer batches as the server can: one frame a run for one stream, eight for eight.
            const batch = streams === 1 ? 1 : MAX_BATCH;
            await peer.run(data, 2 * batch, batch);
            const raw = await peer.run(data, streams * frames, batch);
            rows.push([
              variant,
              String(streams),
              fmt(ours.fps, 1),
              fmt(raw.fps, 1),
              fmt(ours.fps / raw.fps, 2),
              fmt(percentileOf(paced.latencies, 50), 2),
              fmt(percentileOf(paced.latencies, 99), 2),
              fmt(percentileOf(raw.latencies, 50), 2),
              fmt(ours.people / Math.max(1, ours.frames), 2),
              fmt(raw.people / Math.max(1, raw.frames), 2),
            ]);
          }
        } finally {
          await peer.release();
        }
      } finally {
        client.$close();
        await inferencer.stop();
      }
    }
    printTable(
      `streams with no client boxes (person_source DETECTOR) vs the same pipeline as plain onnxruntime calls in one process (JPEG ${FRAME_W}x${FRAME_H} scenes of 1-5 people${QUICK ? "; quick" : ""}). ` +
        `served: the inferencer over gRPC, ${WORKERS} workers x ${INTRA_OP_THREADS} intra-op thread, max batch ${MAX_BATCH}, fps saturated (EVERY_FRAME, 4 in flight a stream), p50/p99 lock-step (1 frame in flight a stream). ` +
        `peer: decode -> letterbox -> one batched detector run -> decodeDetections -> crops -> one batched pose run -> decode keypoints, batch 1 (1 stream) or 8 (8 streams), one session each with ${WORKERS * INTRA_OP_THREADS} intra-op threads; its p50 is per batch run`,
      ["models", "streams", "served fps", "peer fps", "served/peer", "served p50 ms", "served p99 ms", "peer p50 ms/run", "served people/frame", "peer people/frame"],
      rows,
    );

    await accuracy(detector, pose, variants, manifests, detectorConfig, dir.path);
  } finally {
    await bus.close();
    await dir.remove();
  }
}

async function loadRecipe(path: string, overrides: Record<string, string>): Promise<TrainConfig> {
  const { config, problems } = await prepareExperiment(await readFile(path, "utf8"), { overrides });
  if (config === undefined) throw new Error(`${path}:\n${problems.join("\n")}`);
  return config;
}

/** Trains `config` to its end as a job's run does (validating each epoch), then exports it: fp32, and int8 when its gate passes. */
async function train(jobId: string, config: TrainConfig, workDir: string): Promise<TrainedModel> {
  const started = performance.now();
  const session = await TrainingSession.start({ jobId, config: toBinary(TrainConfigSchema, config), roots: { dataRoot: workDir, workDir } });
  let outcome: ExportOutcome;
  try {
    while (session.position.epoch < config.endEpoch) {
      for (;;) {
        if ((await session.train(50)).epochEnded) break;
      }
      const validation = await session.validate();
      process.stdout.write(`${jobId} epoch ${session.position.epoch}: validation AP ${fmt(fromBinary(KeypointMetricsSchema, validation.metrics).ap, 3)}\n`);
    }
    outcome = await session.export();
  } finally {
    await session.close();
  }
  const ap = (bytes: Uint8Array | undefined): number | undefined => (bytes === undefined || bytes.byteLength === 0 ? undefined : fromBinary(KeypointMetricsSchema, bytes).ap);
  if (outcome.gate !== undefined && !outcome.gate.passed) process.stdout.write(`${jobId}: no int8 model (the gate refused it: ${outcome.gate.message}); fp32 only\n`);
  const fp32Ap = ap(outcome.fp32Metrics);
  const int8Ap = ap(outcome.int8Metrics);
  return {
    config,
    fp32: outcome.fp32,
    int8: outcome.gate?.passed === false ? undefined : outcome.int8,
    trainerAp: { ...(fp32Ap === undefined ? {} : { fp32: fp32Ap }), ...(int8Ap === undefined ? {} : { int8: int8Ap }) },
    seconds: (performance.now() - started) / 1000,
  };
}

/** A detector trained elsewhere by the detector recipe: the folder's model.onnx (fp32) and model.int8.onnx. */
async function readGiven(path: string, config: TrainConfig): Promise<TrainedModel> {
  const read = (file: string) => readFile(join(path, file)).then((b) => new Uint8Array(b), () => undefined);
  const [fp32, int8] = await Promise.all([read("model.onnx"), read("model.int8.onnx")]);
  if (fp32 === undefined && int8 === undefined) throw new Error(`POSELOOP_BENCH_DETECTOR: ${path} holds neither model.onnx nor model.int8.onnx`);
  return { config, fp32, int8, trainerAp: {}, seconds: 0 };
}

async function bytesOf(model: TrainedModel, variant: Variant): Promise<Uint8Array> {
  const bytes = model[variant];
  if (bytes === undefined) throw new Error(`no ${variant} model`);
  return bytes;
}

/** Publishes one precision of a model as the serving version of `name`, with the manifest the trainer would write. */
async function publish(registry: ModelRegistry, name: string, model: TrainedModel, variant: Variant): Promise<ModelManifest> {
  const precision = variant === "int8" ? Precision.INT8 : Precision.FP32;
  const manifest = create(ModelManifestSchema, servingManifest(model.config, precision));
  manifest.model = create(ModelRefSchema, { name });
  manifest.trainingJobId = "bench";
  const file = variant === "int8" ? "model.int8.onnx" : "model.onnx";
  const result = await registry.publish({ manifest, files: [{ file, data: await bytesOf(model, variant), precision }], servingFile: file, promote: true, setBy: "bench", reason: "stream-detect bench" });
  return result.manifest;
}

/** Rendered scenes of 1-5 people (the detector's scene mix), as JPEG frames. */
async function scenes(count: number): Promise<Uint8Array[]> {
  const random = new SeededRandom(11);
  const out: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const scene = renderSyntheticScene(random, { width: FRAME_W, height: FRAME_H, minPeople: 1, maxPeople: 5, ...DETECTION_SCENES });
    out.push(await encodeJpeg(scene.image, 85));
  }
  return out;
}

/**
 * `streams` concurrent EVERY_FRAME streams with no boxes and person_source DETECTOR. Saturated: each sends as
 * fast as flow control lets it. Lock-step: each sends its next frame when the previous answer is back.
 */
async function served(client: InferenceClient, data: readonly Uint8Array[], streams: number, frames: number, options: { lockstep?: boolean } = {}): Promise<{ fps: number; latencies: number[]; frames: number; people: number }> {
  const latencies: number[] = [];
  let answered = 0;
  let people = 0;
  const start = performance.now();
  const one = async (s: number): Promise<void> => {
    const sent = new Map<bigint, number>();
    let next: (() => void) | undefined;
    async function* source(): AsyncGenerator<Frame> {
      for (let i = 0; i < frames; i++) {
        if (options.lockstep === true && i > 0) await new Promise<void>((resolve) => (next = resolve));
        const frame = jpegFrame(i, data[(i + s * 7) % data.length] as Uint8Array);
        sent.set(frame.frameId, performance.now());
        yield frame;
      }
    }
    const requests = streamRequests({ delivery: DeliveryMode.EVERY_FRAME, maxInFlight: 4, personSource: PersonSource.DETECTOR }, source());
    for await (const response of client.streamKeypoints(requests)) {
      if (response.payload.case !== "result") continue;
      latencies.push(performance.now() - (sent.get(response.payload.value.frameId) ?? 0));
      answered++;
      people += response.payload.value.persons.length;
      next?.();
      next = undefined;
    }
  };
  await Promise.all(Array.from({ length: streams }, (_, s) => one(s)));
  return { fps: answered / ((performance.now() - start) / 1000), latencies, frames: answered, people };
}

interface DetectorModel {
  readonly session: ort.InferenceSession;
  readonly spec: DetectorSpec;
  readonly inputName: string;
  readonly width: number;
  readonly height: number;
  readonly normalization: TensorNormalization;
}

interface PoseModel {
  readonly session: ort.InferenceSession;
  readonly spec: ServingSpec;
  readonly codec: KeypointCodec;
  readonly normalization: TensorNormalization;
}

/**
 * The peer: the served pipeline as plain onnxruntime calls in one process, with the libraries the inferencer's
 * workers use (@poseloop/vision's decode, warp and crops, @poseloop/detect's letterbox and decoder, the codec's
 * keypoint decode), one session per model, and every frame of a batch in one detector run and all their people
 * in one pose run.
 */
class PeerPipeline {
  readonly #detector: DetectorModel;
  readonly #pose: PoseModel;

  private constructor(detector: DetectorModel, pose: PoseModel) {
    this.#detector = detector;
    this.#pose = pose;
  }

  static async create(detectorManifest: ModelManifest, detectorBytes: Uint8Array, poseManifest: ModelManifest, poseBytes: Uint8Array): Promise<PeerPipeline> {
    const options = { graphOptimizationLevel: "all", intraOpNumThreads: WORKERS * INTRA_OP_THREADS, logSeverityLevel: 3 } as const;
    const input = detectorManifest.input;
    const spec = detectorManifest.detector;
    if (input === undefined || spec === undefined) throw new Error("the detector manifest has no input or detector spec");
    const [m0 = 0, m1 = 0, m2 = 0] = input.mean;
    const [s0 = 1, s1 = 1, s2 = 1] = input.std;
    const { spec: poseSpec, problems } = servingSpecFromManifest(poseManifest);
    if (poseSpec === undefined) throw new Error(`the pose manifest does not serve: ${problems.join("; ")}`);
    const [detectorSession, poseSession] = await Promise.all([ort.InferenceSession.create(detectorBytes, options), ort.InferenceSession.create(poseBytes, options)]);
    return new PeerPipeline(
      { session: detectorSession, spec, inputName: input.name, width: input.width, height: input.height, normalization: { mean: [m0, m1, m2], std: [s0, s1, s2], channelOrder: "RGB" } },
      { session: poseSession, spec: poseSpec, codec: createKeypointCodec(poseSpec.codec), normalization: { mean: poseSpec.mean, std: poseSpec.std, channelOrder: poseSpec.channelOrder } },
    );
  }

  /** `frames` frames in runs of `batch`: throughput, per-run latencies and the people found. */
  async run(data: readonly Uint8Array[], frames: number, batch: number): Promise<{ fps: number; latencies: number[]; frames: number; people: number }> {
    const latencies: number[] = [];
    let people = 0;
    const start = performance.now();
    for (let i = 0; i < frames; i += batch) {
      const runStart = performance.now();
      const jpegs = Array.from({ length: Math.min(batch, frames - i) }, (_, j) => data[(i + j) % data.length] as Uint8Array);
      const images = await Promise.all(jpegs.map((jpeg) => decodeImage(jpeg)));
      const boxes = await this.detect(images);
      for (const found of await this.estimate(images, boxes)) people += found.length;
      latencies.push(performance.now() - runStart);
    }
    return { fps: frames / ((performance.now() - start) / 1000), latencies, frames, people };
  }

  /** Letterbox → one detector run → decodeDetections per frame → boxes in frame pixels; thresholds given or the manifest's. */
  async detect(images: readonly RgbImage[], thresholds: { scoreThreshold?: number; maxDetections?: number } = {}): Promise<{ x: number; y: number; width: number; height: number; score: number }[][]> {
    const { session, spec, inputName, width, height, normalization } = this.#detector;
    const plane = 3 * width * height;
    const tensor = new Float32Array(images.length * plane);
    const pad = [0, 1, 2].map((c) => (spec.padValue - (normalization.mean[c] as number)) / (normalization.std[c] as number));
    const geometries = images.map((image, slot) => {
      const geometry = detectorInput(image.width, image.height, spec, width, height);
      warpToTensor(image, geometry.inverseAffine, width, height, normalization, tensor, slot * plane);
      // The letterbox's right and bottom: the detector was trained on pad_value there, not on the warp's 0.
      for (let c = 0; c < 3; c++) {
        for (let y = 0; y < height; y++) {
          const row = slot * plane + c * width * height + y * width;
          tensor.fill(pad[c] as number, y >= geometry.contentHeight ? row : row + geometry.contentWidth, row + width);
        }
      }
      return geometry;
    });
    const results = await session.run({ [inputName]: new ort.Tensor("float32", tensor, [images.length, 3, height, width]) });
    const outputs: Record<string, DetectorOutput> = {};
    for (const [name, value] of Object.entries(results)) outputs[name] = { data: value.data as DetectorOutput["data"], dims: value.dims };
    const decoded = decodeDetections(spec, outputs, { inputWidth: width, inputHeight: height, ...thresholds });
    return geometries.map((geometry, slot) =>
      (decoded[slot] ?? [])
        .map(geometry.toFrame)
        .filter((b) => b.x2 > b.x1 && b.y2 > b.y1)
        .map((b) => ({ x: b.x1, y: b.y1, width: b.x2 - b.x1, height: b.y2 - b.y1, score: b.score })),
    );
  }

  /** Every frame's boxes cropped into one pose run, keypoints decoded back to frame pixels. */
  async estimate(images: readonly RgbImage[], boxes: readonly (readonly { x: number; y: number; width: number; height: number }[])[]): Promise<Float32Array[][]> {
    const { session, spec, codec, normalization } = this.#pose;
    const plans = images.flatMap((image, frame) => (boxes[frame] ?? []).map((box) => ({ image, frame, box })));
    const out: Float32Array[][] = images.map(() => []);
    if (plans.length === 0) return out;
    const plane = 3 * spec.inputWidth * spec.inputHeight;
    const tensor = new Float32Array(plans.length * plane);
    const crop = { inputWidth: spec.inputWidth, inputHeight: spec.inputHeight, normalization, udp: codec.udp };
    const transforms = plans.map((plan, slot) => cropPerson(plan.image, plan.box, crop, tensor, slot * plane).cropToFrame);
    const result = await session.run({ [spec.inputName]: new ort.Tensor("float32", tensor, [plans.length, 3, spec.inputHeight, spec.inputWidth]) }, [...spec.outputNames]);
    const outputs = spec.outputNames.map((name) => result[name]?.data as Float32Array);
    plans.forEach((plan, slot) => out[plan.frame]?.push(decodeToFrame(codec, outputs, slot, transforms[slot] as Parameters<typeof decodeToFrame>[3])));
    return out;
  }

  async release(): Promise<void> {
    await Promise.all([this.#detector.session.release(), this.#pose.session.release()]);
  }
}

/**
 * Box AP of the detector (evaluateBoxes, the boxes of the peer's detector stage at a score threshold of 0.01,
 * 100 a picture) and the pose model's COCO keypoint AP (evaluateModel: the trainer's pose evaluation) with the
 * ground-truth boxes and with the boxes the detector serves (its manifest's thresholds, as a stream gets them),
 * on the detector recipe's validation split, rendered again here from the same seed and options.
 */
async function accuracy(
  detector: TrainedModel,
  pose: TrainedModel,
  variants: readonly Variant[],
  manifests: Record<string, { detector: ModelManifest; pose: ModelManifest }>,
  config: TrainConfig,
  tempDir: string,
): Promise<void> {
  const synthetic = config.data?.synthetic;
  const count = synthetic?.valImages ?? 0;
  const dir = join(tempDir, "val");
  await generateSyntheticDataset({
    dir,
    split: "val",
    count,
    seed: Number(synthetic?.seed ?? 0n),
    // The ids the trainer gives its validation split (after the training pictures): the same pictures.
    firstImageId: (synthetic?.trainImages ?? 0) + 1,
    width: synthetic?.imageWidth ?? FRAME_W,
    height: synthetic?.imageHeight ?? FRAME_H,
    minPeople: 1,
    maxPeople: synthetic?.maxPeople ?? 4,
    occlusion: synthetic?.occlusion ?? 0,
    ...DETECTION_SCENES,
  });
  const dataset = await readCocoKeypoints({ dir, split: "val" });
  const pictures = await Promise.all(dataset.groundTruthBoxes.map(async (image) => ({ image, rgb: await decodeImage(await readFile(image.imagePath)) })));
  const rows: string[][] = [];
  for (const variant of variants) {
    const models = manifests[variant] as { detector: ModelManifest; pose: ModelManifest };
    const peer = await PeerPipeline.create(models.detector, await bytesOf(detector, variant), models.pose, await bytesOf(pose, variant));
    const ranked: CocoBoxDetection[] = [];
    const servedBoxes: ValidationImage[] = [];
    try {
      for (const { image, rgb } of pictures) {
        const [all = []] = await peer.detect([rgb], { scoreThreshold: AP_SCORE_THRESHOLD, maxDetections: 100 });
        for (const b of all) ranked.push({ image_id: image.imageId, bbox: [b.x, b.y, b.width, b.height], score: b.score });
        const [kept = []] = await peer.detect([rgb]);
        servedBoxes.push({ ...image, boxes: kept.map((b) => ({ bbox: { x: b.x, y: b.y, width: b.width, height: b.height }, score: b.score })) });
      }
    } finally {
      await peer.release();
    }
    const boxes = evaluateBoxes(boxGroundTruths(dataset), ranked, dataset.groundTruthBoxes.map((image) => image.imageId)).stats;
    const gtAp = await poseAp(models.pose, await bytesOf(pose, variant), dataset, dataset.groundTruthBoxes);
    const detectedAp = await poseAp(models.pose, await bytesOf(pose, variant), dataset, servedBoxes);
    rows.push([
      variant,
      fmt(boxes.ap, 3),
      fmt(boxes.ap50, 3),
      fmt(boxes.ar, 3),
      detector.trainerAp[variant] === undefined ? "-" : fmt(detector.trainerAp[variant], 3),
      fmt(gtAp, 3),
      fmt(detectedAp, 3),
      gtAp > 0 ? fmt(detectedAp / gtAp, 2) : "-",
    ]);
  }
  printTable(
    `accuracy on the detector recipe's synthetic multi-person validation split (${count} pictures, ${dataset.file.annotations.length} people; pose model trained in this bench${QUICK ? ", quick: the APs mean nothing" : ""})`,
    ["models", "box AP", "box AP50", "box AR100", "box AP by the trainer", "pose AP, GT boxes", "pose AP, detected boxes", "detected/GT"],
    rows,
  );
}

function boxGroundTruths(dataset: CocoKeypointDataset): { id: number; image_id: number; bbox: number[]; area: number; iscrowd: boolean }[] {
  return dataset.file.annotations.map((a) => ({ id: a.id, image_id: a.image_id, bbox: [...a.bbox], area: a.area, iscrowd: a.iscrowd === 1 }));
}

/** COCO keypoint AP of the pose model on the split with `boxes` (the trainer's evaluation path). */
async function poseAp(manifest: ModelManifest, bytes: Uint8Array, dataset: CocoKeypointDataset, boxes: readonly ValidationImage[]): Promise<number> {
  const { spec, problems } = servingSpecFromManifest(manifest);
  if (spec === undefined) throw new Error(`the pose manifest does not serve: ${problems.join("; ")}`);
  const estimator = new PoseEstimator({ intraOpThreads: WORKERS * INTRA_OP_THREADS, maxPixels: 4096 * 4096 });
  try {
    await estimator.load(spec, bytes);
    const evaluation = await evaluateModel(estimator, spec.version, evaluationSetFromCoco("synthetic-detection/val", dataset, boxes));
    return evaluation.stats.ap;
  } finally {
    await estimator.close();
  }
}
