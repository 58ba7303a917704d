import { create as createMessage, fromBinary, toBinary } from "@bufbuild/protobuf";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { AppError, Code } from "@poseloop/core";
import { DetectionDataLoader, PoseBatchPlan, PoseDataLoader, type DetectionBatch, type PoseBatch, type PoseDataLoaderOptions } from "@poseloop/data";
import { encodeModel } from "@poseloop/onnx";
import { keypointErrors } from "@poseloop/pose";
import { KeypointMetricsSchema } from "@poseloop/proto/poseloop/common/v1/metrics_pb";
import { GetJobResultsResponseSchema } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { DataLoaderPlace, Device, DistillationLoss, OptimizerKind, ScheduleKind, TrainConfigSchema, TrainingEngine as TrainingEngineKind, type TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import {
  decodeTrainingState,
  detectionStepBatch,
  encodeTrainingState,
  learningRate,
  StepEngine,
  type EmaConfig,
  type LrScheduleConfig,
  type OptimizerConfig,
  type StepBatch,
  type TrainingGraphConfig,
} from "@poseloop/train";
import { resolveUnder, type DataRoots } from "../datasets/data-root.js";
import { deviceNameOf } from "../engines/capabilities.js";
import { loadPretrained } from "../engines/pretrained.js";
import { TorchTrainingEngine } from "../engines/torch-engine.js";
import { OrtTrainingEngine, type EngineWeights, type TrainingEngine } from "../engines/training-engine.js";
import { prepareData, prepareDetectionData, type PreparedData, type PreparedDetectionData } from "../datasets/prepare-data.js";
import { runContract, type RunContract } from "../experiment/model-contract.js";
import { DetectorEvaluator } from "../publication/detector-evaluator.js";
import { metricsMessage, ModelEvaluator } from "../publication/model-evaluator.js";
import { exportModel, inferenceModel, weightsFromState, type ExportOutcome } from "../publication/model-export.js";
import { checkpointId, decodeCheckpoint, encodeCheckpoint, type EpochMetrics } from "./checkpoint-file.js";
import { resumeConflicts } from "./resume-check.js";
import { renderResultPlots } from "./results-plots.js";
import { RunResults } from "./run-results.js";

/** What a run starts from. */
export interface RunInit {
  readonly jobId: string;
  /** The resolved TrainConfig, binary. */
  readonly config: Uint8Array;
  readonly roots: DataRoots;
  /** Continue from this checkpoint (a resume, or a takeover after a crash). */
  readonly checkpoint?: Uint8Array;
  /** Fine-tuning: weights (a training state with param:/buffer: tensors) to start from. */
  readonly initWeights?: Uint8Array;
  readonly skipLayers?: readonly string[];
  /** Distillation: the teacher's ONNX model. */
  readonly teacher?: Uint8Array;
  /** Int32 flag set to 1 by the job's owner to stop at the next step boundary. */
  readonly cancelFlag?: SharedArrayBuffer;
  /** The PyTorch engine's interpreter, as the trainer's probe found it (TRAIN.ENGINE: pytorch). */
  readonly python?: string;
  /** The trainer's environment, for the engine process (the worker thread's own is a copy). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** POSELOOP_ENGINE_TIMEOUT: the PyTorch engine answering no request this long counts as hung. */
  readonly engineTimeoutMs?: number;
  /** TRAIN.NODES > 1: where this attempt's nodes meet; this run is node 0 (see jobs/node-runner.ts). */
  readonly rendezvous?: { readonly endpoint: string; readonly id: string };
}

/** Where a run stands. */
export interface RunPosition {
  readonly epoch: number;
  readonly nextBatch: number;
  readonly step: number;
  readonly batchesPerEpoch: number;
  /** Samples in a loader batch: batch_size for each data-parallel replica. */
  readonly samplesPerBatch: number;
  readonly stepsPerEpoch: number;
  readonly endEpoch: number;
  readonly bestAp: number;
  readonly bestEpoch: number;
  readonly history: readonly EpochMetrics[];
  readonly trainInstances: number;
  readonly validationImages: number;
  /** What runs the steps: "pytorch 1.13.1 on cpu, bf16 autocast", "onnxruntime 1.22.0 on cpu". */
  readonly engine: string;
}

/** What one `train` call did. */
export interface TrainChunk {
  readonly position: RunPosition;
  /** Micro-batches run and optimizer steps taken in this call. */
  readonly batches: number;
  readonly steps: number;
  /** Mean loss over the call's micro-batches. */
  readonly loss: number;
  readonly lr: number;
  readonly gradNorm: number;
  /** Mixed precision: the dynamic loss scale after the call (0 without mixed precision). */
  readonly lossScale: number;
  /** Mixed precision: updates skipped in this call because their fp16 gradients overflowed. */
  readonly skippedSteps: number;
  readonly samples: number;
  readonly seconds: number;
  /** The epoch ended with this call. */
  readonly epochEnded: boolean;
  /** The cancel flag stopped it. */
  readonly cancelled: boolean;
  /** A loss or a weight stopped being finite; the chunk ended at that step (see `nonFiniteAt`). */
  readonly nonFinite: boolean;
  /** What was not finite, after which step; set with `nonFinite`. */
  readonly nonFiniteAt?: { readonly what: "loss" | "weights"; readonly step: number };
}

export interface ValidationOutcome {
  readonly epoch: number;
  readonly step: number;
  /** KeypointMetrics, binary. */
  readonly metrics: Uint8Array;
  readonly ap: number;
  readonly isBest: boolean;
  readonly durationMs: number;
}

function optimizerConfig(config: TrainConfig): OptimizerConfig {
  const o = config.optimizer;
  const kind = o?.kind === OptimizerKind.SGD ? "sgd" : o?.kind === OptimizerKind.ADAMW ? "adamw" : "adam";
  return {
    kind,
    momentum: o?.momentum ?? 0,
    nesterov: o?.nesterov ?? false,
    weightDecay: o?.weightDecay ?? 0,
    ...(o !== undefined && o.beta1 > 0 ? { beta1: o.beta1 } : {}),
    ...(o !== undefined && o.beta2 > 0 ? { beta2: o.beta2 } : {}),
    ...(o !== undefined && o.epsilon > 0 ? { epsilon: o.epsilon } : {}),
  };
}

function scheduleConfig(config: TrainConfig): LrScheduleConfig {
  const s = config.schedule;
  const kind = s?.kind === ScheduleKind.MULTISTEP ? "multistep" : s?.kind === ScheduleKind.COSINE ? "cosine" : "constant";
  return {
    kind,
    lr: config.optimizer?.lr ?? 0,
    steps: [...(s?.lrSteps ?? [])],
    ...(s !== undefined && s.lrFactor > 0 ? { factor: s.lrFactor } : {}),
    minLr: s?.minLr ?? 0,
    warmupSteps: s?.warmupSteps ?? 0,
    ...(s !== undefined && s.warmupStartFactor > 0 ? { warmupStartFactor: s.warmupStartFactor } : {}),
  };
}

/** TRAIN.EMA with its documented defaults (config.proto's EmaSpec); undefined when off. */
export function emaConfig(config: TrainConfig): EmaConfig | undefined {
  const ema = config.ema;
  if (ema === undefined) return undefined;
  return { decay: ema.decay > 0 ? ema.decay : 0.9999, warmupUpdates: ema.warmupUpdates ?? 2000 };
}

const base64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString("base64");

/**
 * One training run, driven a chunk at a time by the job's owner: epochs of the data loader through the
 * StepEngine with the LR schedule per step, validation through the serving pipeline, checkpoints of the whole
 * state, and the export of its weights for a publication (the worker that holds the weights exports them).
 * Runs in a worker thread (see training-worker.ts).
 */
export class TrainingRun {
  readonly config: TrainConfig;
  readonly contract: RunContract;
  readonly #init: RunInit;
  readonly #engine: TrainingEngine;
  /**
   * A pose model's crops of people, or a detector's whole pictures; or, when the PyTorch engine builds the
   * batches itself (TRAIN.DATA_LOADER engine), the plan of which samples each batch takes.
   */
  readonly #loader: PoseDataLoader | DetectionDataLoader | PoseBatchPlan;
  /** One for the whole run, so validation pictures are decoded once (every epoch's validation, the gate's). */
  readonly #evaluator: ModelEvaluator | DetectorEvaluator;
  readonly #teacher: ort.InferenceSession | undefined;
  readonly #cancel: Int32Array | undefined;
  readonly #trainInstances: number;
  #epoch: number;
  #nextBatch: number;
  #bestAp = -1;
  #bestEpoch = -1;
  #history: EpochMetrics[] = [];
  /** results.csv and the plots: kept in every checkpoint, so a resumed run continues the same curves. */
  #results = new RunResults();
  #iterator: { epoch: number; nextBatch: number; it: AsyncIterator<RunBatch> } | undefined;

  private constructor(init: RunInit, config: TrainConfig, contract: RunContract, engine: TrainingEngine, loader: PoseDataLoader | DetectionDataLoader | PoseBatchPlan, evaluator: ModelEvaluator | DetectorEvaluator, teacher: ort.InferenceSession | undefined, trainInstances: number) {
    this.#init = init;
    this.config = config;
    this.contract = contract;
    this.#engine = engine;
    this.#loader = loader;
    this.#evaluator = evaluator;
    this.#teacher = teacher;
    this.#trainInstances = trainInstances;
    this.#cancel = init.cancelFlag === undefined ? undefined : new Int32Array(init.cancelFlag);
    this.#epoch = config.beginEpoch;
    this.#nextBatch = 0;
  }

  static async create(init: RunInit): Promise<TrainingRun> {
    const config = fromBinary(TrainConfigSchema, init.config);
    // Before any data is read or graph compiled: a checkpoint that cannot continue under this config says why.
    const resumed = init.checkpoint === undefined ? undefined : decodeCheckpoint(init.checkpoint);
    if (resumed !== undefined) {
      const conflicts = resumeConflicts(fromBinary(TrainConfigSchema, Buffer.from(resumed.header.config, "base64")), config);
      if (conflicts.length > 0) throw new AppError(Code.FAILED_PRECONDITION, `cannot resume job ${init.jobId}: ${conflicts.join("; ")}`);
    }
    const contract = runContract(config);
    const data: PreparedData | PreparedDetectionData = contract.kind === "detector" ? await prepareDetectionData(config, init.roots) : await prepareData(config, init.roots, contract.schema);
    const loaderBatch = samplesPerBatch(config);
    const trainSize = "instances" in data ? data.instances.length : data.images.length;
    if (trainSize < loaderBatch) {
      throw new AppError(Code.FAILED_PRECONDITION, `the training set has ${trainSize} ${"instances" in data ? "instances" : "pictures"}, fewer than one batch of ${loaderBatch}`);
    }
    const distill = config.distillation;
    const training: TrainingGraphConfig = {
      batchSize: config.batchSize,
      gradAccumSteps: config.gradAccumSteps,
      clipGradNorm: config.clipGradNorm,
      optimizer: optimizerConfig(config),
      ...(distill === undefined || init.teacher === undefined
        ? {}
        : { distillation: { weight: distill.lossWeight, kind: distill.loss === DistillationLoss.KL ? "kl" : "mse", ...(distill.temperature > 0 ? { temperature: distill.temperature } : {}) } }),
    };
    const engine = await createEngine(config, contract, training, init);
    let loader: PoseDataLoader | DetectionDataLoader | PoseBatchPlan | undefined;
    let teacher: ort.InferenceSession | undefined;
    try {
      const aug = config.augmentation;
      if (contract.kind === "detector" && !("instances" in data)) {
        const { detector } = contract;
        loader = new DetectionDataLoader(data.images, {
          inputSize: { width: contract.inputWidth, height: contract.inputHeight },
          stride: detector.strides[0] ?? 4,
          numClasses: Math.max(1, detector.numClasses),
          normalization: { mean: contract.mean, std: contract.std, channelOrder: "RGB" },
          padValue: detector.padValue,
          batchSize: loaderBatch,
          mode: "train",
          seed: Number(config.seed),
          imageCache: config.data?.diskCache === true ? { diskDir: join(init.roots.workDir, "image-cache") } : {},
          // A detector sees whole pictures: mirrored, and scaled around the letterbox (DATASET.FLIP, DATASET.SCALE_FACTOR).
          ...(aug === undefined ? {} : { augmentation: { flipProb: aug.flip ? 0.5 : 0, scaleFactor: aug.scaleFactor } }),
        });
        const run = new TrainingRun(init, config, contract, engine, loader, new DetectorEvaluator(config, contract, data.validation), undefined, trainSize);
        if (resumed !== undefined) await run.#restore(resumed);
        else if (init.initWeights !== undefined) await run.#loadInitWeights(init.initWeights, init.skipLayers ?? []);
        return run;
      }
      if (contract.kind !== "pose" || !("instances" in data)) throw new AppError(Code.INTERNAL, "a pose run's data is not pose instances");
      const loaderOptions: PoseDataLoaderOptions = {
        source: { instances: data.instances },
        inputSize: { width: contract.spec.inputWidth, height: contract.spec.inputHeight },
        codec: contract.spec.codec,
        batchSize: loaderBatch,
        mode: "train",
        seed: Number(config.seed),
        schema: contract.schema,
        normalization: { mean: contract.spec.mean, std: contract.spec.std, channelOrder: contract.spec.channelOrder },
        workers: config.loaderWorkers,
        imageCache: config.data?.diskCache === true ? { diskDir: join(init.roots.workDir, "image-cache") } : {},
        ...(aug === undefined
          ? {}
          : {
              augmentation: {
                flip: aug.flip,
                rotationFactor: aug.rotationFactor,
                ...(aug.rotationProb > 0 ? { rotationProb: aug.rotationProb } : {}),
                scaleFactor: aug.scaleFactor,
                halfBodyProb: aug.halfBodyProb,
                ...(aug.halfBodyMinKeypoints > 0 ? { halfBodyMinKeypoints: aug.halfBodyMinKeypoints } : {}),
                occlusionProb: aug.occlusionProb,
                colorJitter: aug.colorJitter,
              },
            }),
      };
      if (config.dataLoader === DataLoaderPlace.ENGINE) {
        if (!(engine instanceof TorchTrainingEngine)) throw new AppError(Code.FAILED_PRECONDITION, "TRAIN.DATA_LOADER engine needs TRAIN.ENGINE pytorch");
        const plan = PoseBatchPlan.create(loaderOptions);
        loader = plan;
        // WORKERS is the node's, as HRNet's (one process there): split over this node's engine processes.
        const perProcess = Math.max(1, Math.floor(config.loaderWorkers / Math.max(1, config.gpus)));
        await engine.attachData(plan.config, { workers: perProcess, prefetch: 2, roots: init.roots });
      } else {
        loader = await PoseDataLoader.create(loaderOptions);
      }
      if (init.teacher !== undefined) {
        // The teacher takes turns with the step graph on the same cores: the training sessions' options
        // (no spin-waiting pool).
        teacher = await ort.InferenceSession.create(init.teacher, { ...StepEngine.sessionOptions({ intraOpThreads: Math.max(1, config.intraOpThreads) }), logSeverityLevel: 3 });
      }
      const run = new TrainingRun(init, config, contract, engine, loader, new ModelEvaluator(config, contract, data.validation), teacher, trainSize);
      if (resumed !== undefined) await run.#restore(resumed);
      else if (init.initWeights !== undefined) await run.#loadInitWeights(init.initWeights, init.skipLayers ?? []);
      else if (config.model?.pretrained !== undefined && config.model.pretrained !== "") await run.#loadPretrained(config.model.pretrained);
      return run;
    } catch (error) {
      if (loader instanceof PoseDataLoader) await loader.close();
      await teacher?.release();
      await engine.release();
      throw error;
    }
  }

  get position(): RunPosition {
    const batchSamples = samplesPerBatch(this.config);
    const batchesPerEpoch = Math.floor(this.#trainInstances / batchSamples);
    return {
      epoch: this.#epoch,
      nextBatch: this.#nextBatch,
      step: this.#engine.step,
      batchesPerEpoch,
      samplesPerBatch: batchSamples,
      stepsPerEpoch: Math.max(1, Math.floor(batchesPerEpoch / this.config.gradAccumSteps)),
      endEpoch: this.config.endEpoch,
      bestAp: this.#bestAp,
      bestEpoch: this.#bestEpoch,
      history: this.#history,
      trainInstances: this.#trainInstances,
      validationImages: this.#evaluator.validation.images.length,
      engine: this.#engine.description,
    };
  }

  /** Runs micro-batches of the current epoch until `maxSteps` optimizer steps, the epoch's end, or a cancel. */
  async train(maxSteps: number): Promise<TrainChunk> {
    const started = performance.now();
    const position = this.position;
    if (this.#epoch >= this.config.endEpoch) throw new AppError(Code.FAILED_PRECONDITION, `the run already reached its end epoch ${this.config.endEpoch}`);
    const schedule = scheduleConfig(this.config);
    const it = this.#epochIterator();
    let batches = 0;
    let steps = 0;
    let lossSum = 0;
    let lr = 0;
    let gradNorm = Number.NaN;
    let lossScale = 0;
    let skippedSteps = 0;
    let samples = 0;
    let cancelled = false;
    let nonFiniteAt: { what: "loss" | "weights"; step: number } | undefined;
    let updatedSinceCheck = false;
    while (this.#nextBatch < position.batchesPerEpoch && steps < maxSteps) {
      if (this.#cancel !== undefined && Atomics.load(this.#cancel, 0) !== 0) {
        cancelled = true;
        break;
      }
      const next = await it.next();
      if (next.done === true) break;
      const batch = next.value;
      lr = learningRate(schedule, this.#epoch, this.#engine.step, this.config.endEpoch);
      const result = "planned" in batch ? await (this.#engine as TorchTrainingEngine).runPlanned(batch, lr) : await this.#engine.run(await this.#stepBatch(batch), lr);
      this.#nextBatch++;
      if (this.#iterator !== undefined) this.#iterator.nextBatch = this.#nextBatch;
      batches++;
      samples += batch.size;
      lossSum += result.loss;
      if (result.lossScale !== undefined) lossScale = result.lossScale;
      if (result.updated) {
        steps++;
        // A skipped update's norm is inf or NaN by definition: report the last applied one's.
        if (result.skipped === true) skippedSteps++;
        else {
          gradNorm = result.gradNorm ?? Number.NaN;
          updatedSinceCheck = true;
        }
      }
      if (!Number.isFinite(result.loss)) {
        nonFiniteAt = { what: "loss", step: this.#engine.step };
        break;
      }
      // A non-finite gradient poisons the weights without touching this step's loss (computed before the
      // update): on an epoch's last step nothing else would notice before validation decodes NaN heatmaps.
      if (updatedSinceCheck && result.gradNorm !== undefined && !Number.isFinite(result.gradNorm) && !(await this.#weightsFinite())) {
        nonFiniteAt = { what: "weights", step: this.#engine.step };
        break;
      }
    }
    // Updates without a reported norm (or a finite one that still overflowed a weight) are checked once a chunk.
    if (nonFiniteAt === undefined && updatedSinceCheck && !(await this.#weightsFinite())) nonFiniteAt = { what: "weights", step: this.#engine.step };
    const epochEnded = this.#nextBatch >= position.batchesPerEpoch;
    const seconds = (performance.now() - started) / 1000;
    // A chunk that ended in a non-finite loss or weights fails the job and is never checkpointed: no point.
    if (nonFiniteAt === undefined) {
      this.#results.recordChunk({ step: this.#engine.step, epoch: this.#epoch + 1, loss: batches === 0 ? Number.NaN : lossSum / batches, lr, batches, samples, seconds });
      if (epochEnded) this.#results.endEpoch(this.#epoch + 1, this.#engine.step);
    }
    if (epochEnded) {
      this.#epoch++;
      this.#nextBatch = 0;
      await this.#closeIterator();
    }
    return {
      position: this.position,
      batches,
      steps,
      loss: batches === 0 ? Number.NaN : lossSum / batches,
      lr,
      gradNorm,
      lossScale,
      skippedSteps,
      samples,
      seconds,
      epochEnded,
      cancelled,
      nonFinite: nonFiniteAt !== undefined,
      ...(nonFiniteAt === undefined ? {} : { nonFiniteAt }),
    };
  }

  async #weightsFinite(): Promise<boolean> {
    const { params, buffers } = await this.#engine.weights();
    for (const values of [...params.values(), ...buffers.values()]) {
      for (const value of values) if (!Number.isFinite(value)) return false;
    }
    return true;
  }

  /** COCO AP (a detector's: box AP) of the current weights on the validation set, through the serving pipeline. */
  async validate(): Promise<ValidationOutcome> {
    const started = performance.now();
    const epoch = this.#epoch;
    const model = encodeModel(inferenceModel(this.#engine.model, await this.#modelWeights()));
    const evaluator = this.#evaluator;
    let evaluation: Awaited<ReturnType<ModelEvaluator["evaluate"] | DetectorEvaluator["evaluate"]>>;
    let missed: ReturnType<typeof keypointErrors>["keypoints"] | undefined;
    if (evaluator instanceof ModelEvaluator) {
      const poses = await evaluator.evaluate(model, `e${epoch}-s${this.#engine.step}`);
      if (this.contract.kind === "pose") missed = keypointErrors(evaluator.validation.groundTruths, poses.detections, this.contract.schema).keypoints;
      evaluation = poses;
    } else evaluation = await evaluator.evaluate(model);
    const metrics = metricsMessage(evaluation);
    const ap = evaluation.stats.ap;
    const isBest = ap > this.#bestAp;
    if (isBest) {
      this.#bestAp = ap;
      this.#bestEpoch = epoch;
    }
    const bytes = toBinary(KeypointMetricsSchema, metrics);
    this.#history.push({ epoch, step: this.#engine.step, ap, metrics: base64(bytes) });
    const durationMs = Math.round(performance.now() - started);
    const { ap50, ap75, apMedium, apLarge, ar, ar50, ar75 } = metrics;
    this.#results.recordValidation(epoch, { ap, ap50, ap75, apMedium, apLarge, ar, ar50, ar75, seconds: durationMs / 1000 }, missed);
    return { epoch, step: this.#engine.step, metrics: bytes, ap, isBest, durationMs };
  }

  /**
   * The whole state as a checkpoint file, and the run's results as of it (results.csv and the PNG plots, a
   * GetJobResultsResponse, binary) to store beside it.
   */
  async checkpoint(): Promise<{ id: string; bytes: Uint8Array; epoch: number; step: number; results: Uint8Array }> {
    const state = await this.#engine.exportState();
    const id = checkpointId(this.#epoch, this.#engine.step, this.#nextBatch);
    const bytes = encodeCheckpoint(
      {
        jobId: this.#init.jobId,
        checkpointId: id,
        config: base64(this.#init.config),
        epoch: this.#epoch,
        nextBatch: this.#nextBatch,
        step: this.#engine.step,
        bestAp: this.#bestAp,
        bestEpoch: this.#bestEpoch,
        history: this.#history,
        results: this.#results.state(),
        createdAt: new Date().toISOString(),
      },
      encodeTrainingState(state),
    );
    const results = toBinary(GetJobResultsResponseSchema, createMessage(GetJobResultsResponseSchema, { csv: this.#results.csv(), plots: await renderResultPlots(this.#results), checkpointId: id }));
    return { id, bytes, epoch: this.#epoch, step: this.#engine.step, results };
  }

  /**
   * Export → int8 → AP gate for a publication: of the weights this run holds now, or of a checkpoint's (an
   * earlier best, which the run no longer holds).
   */
  async export(checkpoint?: Uint8Array): Promise<ExportOutcome> {
    const model = this.#engine.model;
    if (checkpoint === undefined) return exportModel({ model, weights: await this.#modelWeights(), epoch: this.#epoch, step: this.#engine.step }, this.config, this.#evaluator);
    const { header, state } = decodeCheckpoint(checkpoint);
    return exportModel({ model, weights: weightsFromState(decodeTrainingState(state).tensors, model), epoch: header.epoch, step: header.step }, this.config, this.#evaluator);
  }

  /** The weights the run validates and exports: TRAIN.EMA's moving average when on (the raw ones keep training). */
  async #modelWeights(): Promise<EngineWeights> {
    return (await this.#engine.averagedWeights()) ?? (await this.#engine.weights());
  }

  async close(): Promise<void> {
    await this.#closeIterator();
    // A detection loader holds no workers: its batches are built in this thread.
    if (this.#loader instanceof PoseDataLoader) await this.#loader.close();
    await this.#evaluator.close();
    await this.#teacher?.release();
    await this.#engine.release();
  }

  async #restore({ header, state }: ReturnType<typeof decodeCheckpoint>): Promise<void> {
    await this.#engine.importState(decodeTrainingState(state));
    this.#epoch = header.epoch;
    this.#nextBatch = header.nextBatch;
    this.#bestAp = header.bestAp;
    this.#bestEpoch = header.bestEpoch;
    this.#history = [...header.history];
    this.#results = new RunResults(header.results);
  }

  async #loadInitWeights(bytes: Uint8Array, skip: readonly string[]): Promise<void> {
    const state = decodeTrainingState(bytes);
    const weights = new Map<string, Float32Array>();
    // A checkpoint of a run with TRAIN.EMA: its moving average, the weights it validated and published.
    const prefix = [...state.tensors.keys()].some((name) => name.startsWith("ema:")) ? "ema:" : "";
    for (const [name, data] of state.tensors) {
      if (name.startsWith(`${prefix}param:`)) weights.set(name.slice(`${prefix}param:`.length), data);
      else if (name.startsWith(`${prefix}buffer:`)) weights.set(name.slice(`${prefix}buffer:`.length), data);
    }
    await this.#engine.loadWeights(weights, { skip });
  }

  /**
   * MODEL.PRETRAINED: a PyTorch state_dict under the data root, mapped onto the zoo's names by the engine
   * package's importer (the file is read by torch, whichever engine trains); the heads a backbone-only file
   * cannot have keep their fresh initialization.
   */
  async #loadPretrained(path: string): Promise<void> {
    // Refused at submission too: the importer maps PyTorch names onto the pose models' only.
    if (this.contract.kind === "detector") throw new AppError(Code.FAILED_PRECONDITION, `MODEL.PRETRAINED ${path}: the detector has no PyTorch weights to import`);
    const python = this.#init.python;
    if (python === undefined) throw new AppError(Code.FAILED_PRECONDITION, `MODEL.PRETRAINED ${path}: reading a PyTorch state_dict needs the PyTorch engine's Python with torch, and this trainer has none`);
    const registry = this.#engine.model.registry;
    const weights = await loadPretrained({
      python,
      // Checked at submission; resolved again here, where the data root may have changed since.
      file: await resolveUnder(this.#init.roots.dataRoot, path, "MODEL.PRETRAINED"),
      displayName: path,
      architecture: this.contract.modelConfig.architecture,
      targets: [...registry.params, ...registry.buffers],
      env: this.#init.env ?? {},
    });
    await this.#engine.loadWeights(weights);
  }

  #epochIterator(): AsyncIterator<RunBatch> {
    const current = this.#iterator;
    if (current !== undefined && current.epoch === this.#epoch && current.nextBatch === this.#nextBatch) return current.it;
    void current?.it.return?.();
    const loader = this.#loader;
    const it = (loader instanceof PoseBatchPlan ? plannedEpoch(this.#engine as TorchTrainingEngine, loader, this.#epoch, this.#nextBatch) : loader.epoch(this.#epoch, { startBatch: this.#nextBatch }))[Symbol.asyncIterator]();
    this.#iterator = { epoch: this.#epoch, nextBatch: this.#nextBatch, it };
    return it;
  }

  async #closeIterator(): Promise<void> {
    const current = this.#iterator;
    this.#iterator = undefined;
    await current?.it.return?.();
  }

  /** A loader batch as the step graph's inputs: a detector's CenterNet targets, or heatmaps (and a teacher's). */
  async #stepBatch(batch: PoseBatch | DetectionBatch): Promise<StepBatch> {
    if (!Array.isArray(batch.targets)) return detectionStepBatch(batch.images, (batch as DetectionBatch).targets);
    const pose = batch as PoseBatch;
    const teacher = this.#teacher === undefined ? undefined : await this.#teacherHeatmaps(pose);
    return { images: pose.images, targets: pose.targets[0] as Float32Array, targetWeights: pose.targetWeights, ...(teacher === undefined ? {} : { teacher }) };
  }

  async #teacherHeatmaps(batch: PoseBatch): Promise<Float32Array> {
    const session = this.#teacher as ort.InferenceSession;
    const { inputWidth: w, inputHeight: h } = this.contract.kind === "pose" ? this.contract.spec : this.contract;
    const out = await session.run({ [session.inputNames[0] as string]: new ort.Tensor("float32", batch.images, [batch.size, 3, h, w]) });
    return Float32Array.from(out[session.outputNames[0] as string]?.data as Float32Array);
  }
}

/**
 * The run's step engine: onnxruntime in this thread (the default), or the PyTorch engine's process on the
 * device the config names. Both start from the same seeded weights and take the same batches.
 */
async function createEngine(config: TrainConfig, contract: RunContract, training: TrainingGraphConfig, init: RunInit): Promise<TrainingEngine> {
  if (config.engine !== TrainingEngineKind.PYTORCH) {
    return OrtTrainingEngine.create({
      model: contract.modelConfig,
      training,
      seed: Number(config.seed),
      device: config.device === Device.CUDA ? "cuda" : config.device === Device.WEBGPU ? "webgpu" : "cpu",
      mixedPrecision: config.mixedPrecision,
      ...(config.intraOpThreads > 0 ? { intraOpThreads: config.intraOpThreads } : {}),
      ...(config.replicas > 1 ? { replicas: config.replicas } : {}),
      ...ema(config),
    });
  }
  if (init.python === undefined) throw new AppError(Code.FAILED_PRECONDITION, `engine pytorch cannot run job ${init.jobId} on this trainer: it found no Python that imports torch`);
  const env = init.env ?? {};
  return TorchTrainingEngine.create({
    model: contract.modelConfig,
    training,
    seed: Number(config.seed),
    device: deviceNameOf(config),
    amp: config.mixedPrecision,
    replicas: dataParallel(config),
    gpus: Math.max(1, config.gpus),
    nodes: Math.max(1, config.nodes),
    ...(init.rendezvous === undefined ? {} : { rdzvEndpoint: init.rendezvous.endpoint, rdzvId: init.rendezvous.id }),
    // TRAIN.INTRA_OP_THREADS is per replica: onnxruntime runs each replica in a thread of its own, this engine runs
    // a process's replicas one after another, so it gets all their threads.
    threads: config.intraOpThreads * (Math.max(1, config.gpus) * Math.max(1, config.nodes) > 1 ? 1 : Math.max(1, config.replicas)),
    channelsLast: config.channelsLast ?? false,
    syncBatchNorm: config.syncBatchNorm,
    ...ema(config),
    python: init.python,
    ...(init.engineTimeoutMs === undefined ? {} : { progressTimeoutMs: init.engineTimeoutMs }),
    // TRAIN.DATA_LOADER engine: the engine resolves the job's image paths against these roots.
    env: { ...env, POSELOOP_DATA_ROOT: init.roots.dataRoot, POSELOOP_WORK_DIR: init.roots.workDir },
  });
}

function ema(config: TrainConfig): { ema?: EmaConfig } {
  const resolved = emaConfig(config);
  return resolved === undefined ? {} : { ema: resolved };
}

/** A batch the engine builds itself (TRAIN.DATA_LOADER engine): which one, and how many samples it holds. */
interface PlannedBatch {
  readonly planned: true;
  readonly epoch: number;
  readonly index: number;
  readonly size: number;
}

type RunBatch = PoseBatch | DetectionBatch | PlannedBatch;

/** An epoch's batches from `start` on, built by the engine: it is told the plan, then each step names its batch. */
async function* plannedEpoch(engine: TorchTrainingEngine, plan: PoseBatchPlan, epoch: number, start: number): AsyncGenerator<PlannedBatch, void, undefined> {
  const requests = plan.requests(epoch, start);
  await engine.plan(requests);
  for (const request of requests) yield { planned: true, epoch, index: request.index, size: request.samples.length };
}

/** A loader batch feeds every data-parallel replica its batch_size samples (configs from before replicas have 0). */
function samplesPerBatch(config: TrainConfig): number {
  return config.batchSize * dataParallel(config);
}

/**
 * Data-parallel replicas of a step: TRAIN.REPLICAS on one node, or under torchrun one process per GPU of every
 * node (TRAIN.GPUS x TRAIN.NODES) — the same semantics, each takes batch_size samples of the loader's batch.
 */
function dataParallel(config: TrainConfig): number {
  const processes = Math.max(1, config.gpus) * Math.max(1, config.nodes);
  return processes > 1 ? processes : Math.max(1, config.replicas);
}
