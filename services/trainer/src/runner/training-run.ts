import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { AppError, Code } from "@poseloop/core";
import { PoseDataLoader, type PoseBatch } from "@poseloop/data";
import { DecodedFrameCache, evaluateModel, PoseEstimator, type EvaluationSet, type ModelEvaluation } from "@poseloop/estimator";
import { encodeModel } from "@poseloop/onnx";
import { KeypointMetricsSchema, type KeypointMetrics } from "@poseloop/proto/poseloop/common/v1/metrics_pb";
import {
  Calibrator,
  DistillationLoss,
  OptimizerKind,
  ScheduleKind,
  TrainConfigSchema,
  type TrainConfig,
} from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { defaultStrategies, runQuantizationGate, type CalibrationFeeds, type GateResult } from "@poseloop/quant";
import {
  buildInferenceModel,
  decodeTrainingState,
  encodeTrainingState,
  IoNames,
  learningRate,
  StepEngine,
  type LrScheduleConfig,
  type OptimizerConfig,
  type StepRunnerOptions,
  type TrainingGraphConfig,
} from "@poseloop/train";
import type { DataRoots } from "../datasets/data-root.js";
import { prepareData } from "../datasets/prepare-data.js";
import { checkpointId, decodeCheckpoint, encodeCheckpoint, type EpochMetrics } from "./checkpoint-file.js";
import { INPUT_NAME, OUTPUT_NAME, runContract, type RunContract } from "./model-contract.js";

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
  readonly nonFinite: boolean;
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

export interface ExportOutcome {
  readonly fp32: Uint8Array;
  readonly int8: Uint8Array | undefined;
  /** The weights as a training state (param:/buffer: tensors), for fine-tuning from this version. */
  readonly weights: Uint8Array;
  readonly fp32Metrics: Uint8Array;
  readonly int8Metrics: Uint8Array | undefined;
  readonly gate:
    | {
        passed: boolean;
        maxApDrop: number;
        message: string;
        attempts: { strategy: string; calibrator: string; fp32Ap: number; int8Ap: number; passed: boolean }[];
        /** The accepted int8 model's weight range (0 when none passed). */
        weightRange: number;
      }
    | undefined;
  readonly epoch: number;
  readonly step: number;
  readonly sizes: { fp32: number; int8: number };
}

const CALIBRATORS = { [Calibrator.MINMAX]: "minmax", [Calibrator.PERCENTILE]: "percentile", [Calibrator.ENTROPY]: "entropy", [Calibrator.UNSPECIFIED]: "percentile" } as const;

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

function metricsMessage(evaluation: ModelEvaluation): KeypointMetrics {
  const s = evaluation.stats;
  return create(KeypointMetricsSchema, {
    ap: s.ap,
    ap50: s.ap50,
    ap75: s.ap75,
    apMedium: s.apMedium,
    apLarge: s.apLarge,
    ar: s.ar,
    ar50: s.ar50,
    ar75: s.ar75,
    arMedium: s.arMedium,
    arLarge: s.arLarge,
    dataset: evaluation.dataset,
    numImages: evaluation.numImages,
    numInstances: evaluation.numInstances,
    flipTest: evaluation.flipTest,
  });
}

/** Largest validation picture decoded (width·height). */
const MAX_FRAME_PIXELS = 64 * 1024 * 1024;
/**
 * Decoded validation pictures kept between epochs. The synthetic demo's 200 need 29 MB and its validation no
 * longer decodes JPEGs after the first epoch (with the replicas' threads: 1.3-1.5 s an epoch before, 0.7-0.9 s
 * after); a COCO val2017 (5000 pictures, ~4.6 GB decoded) keeps its first ~270 and decodes the rest each time.
 */
const VALIDATION_FRAME_CACHE_BYTES = 256 * 1024 * 1024;

const base64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString("base64");

/**
 * One training run, driven a chunk at a time by the job's owner: epochs of the data loader through the
 * StepEngine with the LR schedule per step, validation through the serving pipeline, checkpoints of the whole
 * state, and the export → int8 gate of a publication. Runs in a worker thread (see training-worker.ts).
 */
export class TrainingRun {
  readonly config: TrainConfig;
  readonly contract: RunContract;
  readonly #init: RunInit;
  readonly #engine: StepEngine;
  readonly #loader: PoseDataLoader;
  readonly #validation: EvaluationSet;
  readonly #estimator: PoseEstimator;
  /** Validation pictures decoded once for the whole run (validation every epoch, the export's gate). */
  readonly #frames: DecodedFrameCache;
  readonly #teacher: ort.InferenceSession | undefined;
  readonly #cancel: Int32Array | undefined;
  readonly #trainInstances: number;
  #epoch: number;
  #nextBatch: number;
  #bestAp = -1;
  #bestEpoch = -1;
  #history: EpochMetrics[] = [];
  #iterator: { epoch: number; nextBatch: number; it: AsyncIterator<PoseBatch> } | undefined;

  private constructor(init: RunInit, config: TrainConfig, contract: RunContract, engine: StepEngine, loader: PoseDataLoader, validation: EvaluationSet, teacher: ort.InferenceSession | undefined, trainInstances: number) {
    this.#init = init;
    this.config = config;
    this.contract = contract;
    this.#engine = engine;
    this.#loader = loader;
    this.#validation = validation;
    this.#teacher = teacher;
    this.#trainInstances = trainInstances;
    // Validation and the export's evaluations run while the step sessions wait: they get all the threads the
    // replicas train with (0: onnxruntime's default, one per core, as for training).
    this.#estimator = new PoseEstimator({ intraOpThreads: config.intraOpThreads > 0 ? config.intraOpThreads * Math.max(1, config.replicas) : 0, maxPixels: MAX_FRAME_PIXELS });
    this.#frames = new DecodedFrameCache({ maxBytes: VALIDATION_FRAME_CACHE_BYTES, maxPixels: MAX_FRAME_PIXELS });
    this.#cancel = init.cancelFlag === undefined ? undefined : new Int32Array(init.cancelFlag);
    this.#epoch = config.beginEpoch;
    this.#nextBatch = 0;
  }

  static async create(init: RunInit): Promise<TrainingRun> {
    const config = fromBinary(TrainConfigSchema, init.config);
    const contract = runContract(config);
    const data = await prepareData(config, init.roots, contract.schema);
    const loaderBatch = samplesPerBatch(config);
    if (data.instances.length < loaderBatch) {
      throw new AppError(Code.FAILED_PRECONDITION, `the training set has ${data.instances.length} instances, fewer than one batch of ${loaderBatch}`);
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
    const options: StepRunnerOptions = {
      model: contract.modelConfig,
      training,
      seed: Number(config.seed),
      device: "cpu",
      mixedPrecision: config.mixedPrecision,
      ...(config.intraOpThreads > 0 ? { intraOpThreads: config.intraOpThreads } : {}),
      ...(config.replicas > 1 ? { replicas: config.replicas } : {}),
    };
    const engine = await StepEngine.create(options);
    let loader: PoseDataLoader | undefined;
    let teacher: ort.InferenceSession | undefined;
    try {
      const aug = config.augmentation;
      loader = await PoseDataLoader.create({
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
      });
      if (init.teacher !== undefined) {
        // The teacher takes turns with the step graph on the same cores: the training sessions' options
        // (no spin-waiting pool).
        teacher = await ort.InferenceSession.create(init.teacher, { ...StepEngine.sessionOptions({ intraOpThreads: Math.max(1, config.intraOpThreads) }), logSeverityLevel: 3 });
      }
      const run = new TrainingRun(init, config, contract, engine, loader, data.validation, teacher, data.instances.length);
      if (init.checkpoint !== undefined) run.#restore(init.checkpoint);
      else if (init.initWeights !== undefined) run.#loadInitWeights(init.initWeights, init.skipLayers ?? []);
      return run;
    } catch (error) {
      await loader?.close();
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
      validationImages: this.#validation.images.length,
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
    let nonFinite = false;
    while (this.#nextBatch < position.batchesPerEpoch && steps < maxSteps) {
      if (this.#cancel !== undefined && Atomics.load(this.#cancel, 0) !== 0) {
        cancelled = true;
        break;
      }
      const next = await it.next();
      if (next.done === true) break;
      const batch = next.value;
      lr = learningRate(schedule, this.#epoch, this.#engine.step, this.config.endEpoch);
      const teacher = this.#teacher === undefined ? undefined : await this.#teacherHeatmaps(batch);
      const result = await this.#engine.run({ images: batch.images, targets: batch.targets[0] as Float32Array, targetWeights: batch.targetWeights, ...(teacher === undefined ? {} : { teacher }) }, lr);
      this.#nextBatch++;
      if (this.#iterator !== undefined) this.#iterator.nextBatch = this.#nextBatch;
      batches++;
      samples += batch.size;
      lossSum += result.loss;
      if (!Number.isFinite(result.loss)) nonFinite = true;
      if (result.lossScale !== undefined) lossScale = result.lossScale;
      if (result.updated) {
        steps++;
        // A skipped update's norm is inf or NaN by definition: report the last applied one's.
        if (result.skipped === true) skippedSteps++;
        else gradNorm = result.gradNorm ?? Number.NaN;
      }
    }
    const epochEnded = this.#nextBatch >= position.batchesPerEpoch;
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
      seconds: (performance.now() - started) / 1000,
      epochEnded,
      cancelled,
      nonFinite,
    };
  }

  /** COCO AP of the current weights on the validation set, through the serving pipeline. */
  async validate(): Promise<ValidationOutcome> {
    const started = performance.now();
    const epoch = this.#epoch;
    const evaluation = await this.#evaluate(encodeModel(this.#engine.inferenceModel({ inputName: INPUT_NAME, outputName: OUTPUT_NAME })), `e${epoch}-s${this.#engine.step}`);
    const metrics = metricsMessage(evaluation);
    const ap = evaluation.stats.ap;
    const isBest = ap > this.#bestAp;
    if (isBest) {
      this.#bestAp = ap;
      this.#bestEpoch = epoch;
    }
    const bytes = toBinary(KeypointMetricsSchema, metrics);
    this.#history.push({ epoch, step: this.#engine.step, ap, metrics: base64(bytes) });
    return { epoch, step: this.#engine.step, metrics: bytes, ap, isBest, durationMs: Math.round(performance.now() - started) };
  }

  /** The whole state as a checkpoint file. */
  checkpoint(): { id: string; bytes: Uint8Array; epoch: number; step: number } {
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
        createdAt: new Date().toISOString(),
      },
      encodeTrainingState(this.#engine.exportState()),
    );
    return { id, bytes, epoch: this.#epoch, step: this.#engine.step };
  }

  /**
   * The artifacts of a publication, from the current weights or from a checkpoint's: the fp32 inference model
   * (BatchNorm folded), its AP, and, when quantization is on, the int8 model that passed the AP gate (or the
   * gate's report of why none did).
   */
  async export(source?: Uint8Array): Promise<ExportOutcome> {
    let weights = this.#engine.weights();
    let epoch = this.#epoch;
    let step = this.#engine.step;
    if (source !== undefined) {
      const { header, state } = decodeCheckpoint(source);
      weights = weightsFromState(decodeTrainingState(state).tensors, this.#engine);
      epoch = header.epoch;
      step = header.step;
    }
    const model = this.#engine.model;
    const fp32Proto = buildInferenceModel(model, weights, { inputName: INPUT_NAME, outputName: OUTPUT_NAME });
    const fp32 = encodeModel(fp32Proto);
    const fp32Evaluation = await this.#evaluate(fp32, `export-fp32-${step}`);
    const fp32Metrics = toBinary(KeypointMetricsSchema, metricsMessage(fp32Evaluation));
    const weightTensors = new Map<string, Float32Array>();
    for (const [name, data] of weights.params) weightTensors.set(IoNames.param(name), data);
    for (const [name, data] of weights.buffers) weightTensors.set(IoNames.buffer(name), data);
    const weightBytes = encodeTrainingState({ step, microStep: 0, tensors: weightTensors });
    const quant = this.config.quantization;
    if (quant?.enabled !== true) {
      return { fp32, int8: undefined, weights: weightBytes, fp32Metrics, int8Metrics: undefined, gate: undefined, epoch, step, sizes: { fp32: fp32.byteLength, int8: 0 } };
    }
    const calibrator = CALIBRATORS[quant.calibrator];
    let int8Metrics: Uint8Array | undefined;
    let attempt = 0;
    const result: GateResult = await runQuantizationGate(fp32Proto, await this.#calibrationFeeds(quant.calibrationSamples || 256), {
      maxApDrop: quant.maxApDrop,
      fp32Ap: fp32Evaluation.stats.ap,
      strategies: defaultStrategies(calibrator, [OUTPUT_NAME, ...quant.fp32Nodes], quant.percentile || 99.99).map((s) => ({ ...s, keepFp32: [...new Set([...s.keepFp32, ...quant.fp32Nodes])] })),
      evaluate: async (bytes) => {
        const evaluation = await this.#evaluate(bytes, `export-int8-${step}-${attempt++}`);
        int8Metrics = toBinary(KeypointMetricsSchema, metricsMessage(evaluation));
        return evaluation.stats.ap;
      },
      quantize: { skipSqnr: true, fullRangeWeights: quant.fullRangeWeights },
    });
    const gate = {
      passed: result.passed,
      maxApDrop: result.maxApDrop,
      message: result.message,
      attempts: result.attempts.map((a) => ({ strategy: a.strategy, calibrator: a.calibrator, fp32Ap: result.fp32Ap, int8Ap: a.int8Ap, passed: a.passed })),
      weightRange: result.accepted?.report.weightRange ?? 0,
    };
    const int8 = result.accepted?.bytes;
    return { fp32, int8, weights: weightBytes, fp32Metrics, int8Metrics: int8 === undefined ? undefined : int8Metrics, gate, epoch, step, sizes: { fp32: fp32.byteLength, int8: int8?.byteLength ?? 0 } };
  }

  async close(): Promise<void> {
    await this.#closeIterator();
    await this.#loader.close();
    await this.#estimator.close();
    await this.#teacher?.release();
    await this.#engine.release();
  }

  #restore(bytes: Uint8Array): void {
    const { header, state } = decodeCheckpoint(bytes);
    if (header.config !== base64(this.#init.config)) {
      throw new AppError(Code.FAILED_PRECONDITION, `checkpoint ${header.checkpointId} was written with another config; resume it with the config it was trained with`);
    }
    this.#engine.importState(decodeTrainingState(state));
    this.#epoch = header.epoch;
    this.#nextBatch = header.nextBatch;
    this.#bestAp = header.bestAp;
    this.#bestEpoch = header.bestEpoch;
    this.#history = [...header.history];
  }

  #loadInitWeights(bytes: Uint8Array, skip: readonly string[]): void {
    const state = decodeTrainingState(bytes);
    const weights = new Map<string, Float32Array>();
    for (const [name, data] of state.tensors) {
      if (name.startsWith("param:")) weights.set(name.slice("param:".length), data);
      else if (name.startsWith("buffer:")) weights.set(name.slice("buffer:".length), data);
    }
    this.#engine.loadWeights(weights, { skip });
  }

  #epochIterator(): AsyncIterator<PoseBatch> {
    const current = this.#iterator;
    if (current !== undefined && current.epoch === this.#epoch && current.nextBatch === this.#nextBatch) return current.it;
    void current?.it.return?.();
    const it = this.#loader.epoch(this.#epoch, { startBatch: this.#nextBatch })[Symbol.asyncIterator]();
    this.#iterator = { epoch: this.#epoch, nextBatch: this.#nextBatch, it };
    return it;
  }

  async #closeIterator(): Promise<void> {
    const current = this.#iterator;
    this.#iterator = undefined;
    await current?.it.return?.();
  }

  async #teacherHeatmaps(batch: PoseBatch): Promise<Float32Array> {
    const session = this.#teacher as ort.InferenceSession;
    const { inputWidth: w, inputHeight: h } = this.contract.spec;
    const out = await session.run({ [session.inputNames[0] as string]: new ort.Tensor("float32", batch.images, [batch.size, 3, h, w]) });
    return Float32Array.from(out[session.outputNames[0] as string]?.data as Float32Array);
  }

  async #evaluate(model: Uint8Array, version: string): Promise<ModelEvaluation> {
    const spec = { ...this.contract.spec, version };
    await this.#estimator.load(spec, model);
    try {
      const validation = this.config.validation;
      return await evaluateModel(this.#estimator, version, this.#validation, {
        flipTest: validation?.flipTest ?? false,
        ...(validation !== undefined && validation.keypointScoreThreshold > 0 ? { keypointScoreThreshold: validation.keypointScoreThreshold } : {}),
        ...(validation !== undefined && validation.oksThreshold > 0 && !validation.useGtBoxes ? { oksNmsThreshold: validation.oksThreshold } : {}),
        ...(validation !== undefined && validation.maxImages > 0 ? { maxImages: validation.maxImages } : {}),
        frames: this.#frames,
      });
    } finally {
      await this.#estimator.release(version);
    }
  }

  /** Validation crops (no augmentation) as calibration batches. */
  async #calibrationFeeds(samples: number): Promise<CalibrationFeeds> {
    const { inputWidth: w, inputHeight: h } = this.contract.spec;
    const batchSize = Math.min(16, samples);
    const loader = await PoseDataLoader.create({
      source: { boxes: this.#validation.images },
      inputSize: { width: w, height: h },
      codec: this.contract.spec.codec,
      batchSize,
      mode: "validation",
      schema: this.contract.schema,
      normalization: { mean: this.contract.spec.mean, std: this.contract.spec.std, channelOrder: this.contract.spec.channelOrder },
      workers: 0,
    });
    const feeds: Record<string, ort.Tensor>[] = [];
    try {
      let taken = 0;
      for await (const batch of loader.epoch(0)) {
        feeds.push({ [INPUT_NAME]: new ort.Tensor("float32", batch.images, [batch.size, 3, h, w]) });
        taken += batch.size;
        if (taken >= samples) break;
      }
    } finally {
      await loader.close();
    }
    return feeds;
  }
}

/** The parameters and buffers of a training state, checked against the model. */
function weightsFromState(tensors: ReadonlyMap<string, Float32Array>, engine: StepEngine): { params: Map<string, Float32Array>; buffers: Map<string, Float32Array> } {
  const params = new Map<string, Float32Array>();
  const buffers = new Map<string, Float32Array>();
  for (const spec of engine.model.registry.params) {
    const data = tensors.get(IoNames.param(spec.name));
    if (data === undefined) throw new AppError(Code.DATA_LOSS, `the checkpoint has no parameter ${spec.name}`);
    params.set(spec.name, data);
  }
  for (const spec of engine.model.registry.buffers) {
    const data = tensors.get(IoNames.buffer(spec.name));
    if (data === undefined) throw new AppError(Code.DATA_LOSS, `the checkpoint has no buffer ${spec.name}`);
    buffers.set(spec.name, data);
  }
  return { params, buffers };
}

/** A loader batch feeds every data-parallel replica its batch_size samples (configs from before replicas have 0). */
function samplesPerBatch(config: TrainConfig): number {
  return config.batchSize * Math.max(1, config.replicas);
}
