import { fromBinary, toBinary } from "@bufbuild/protobuf";
import * as ort from "onnxruntime-node";
import { evaluateModel, modelFailureReason, modelLoadProblems, PoseEstimator, servingSpecFromManifest, type EvaluationSet } from "@poseloop/estimator";
import { decodeModel, inspectModel } from "@poseloop/onnx";
import type { KeypointSchema } from "@poseloop/pose";
import { KeypointMetricsSchema } from "@poseloop/proto/poseloop/common/v1/metrics_pb";
import { DetectorHead, ModelKind, ModelManifestSchema, type ModelManifest } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { TrainConfigSchema } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { defaultStrategies, runQuantizationGate } from "@poseloop/quant";
import type { DataRoots } from "../datasets/data-root.js";
import { prepareValidation } from "../datasets/prepare-data.js";
import { schemaFromProto } from "../experiment/model-contract.js";
import { metricsMessage, poseCalibrationFeeds } from "../publication/model-evaluator.js";

/** Crops in the load check's warm-up batch: what an inferencer sends at most by default. */
export const IMPORT_CHECK_BATCH = 8;
/** Largest picture decoded while measuring AP (width·height), as a training run's validation. */
const MAX_FRAME_PIXELS = 64 * 1024 * 1024;

/** What an import worker starts from: plain data, it crosses into the worker. */
export interface ImportInit {
  /** The manifest (ModelManifest, binary) with a provisional version. */
  readonly manifest: Uint8Array;
  readonly model: Uint8Array;
  readonly roots: DataRoots;
  /** TrainConfig (binary) naming the AP set as its dataset; absent: no AP measured. */
  readonly validation?: Uint8Array;
  /** Quantize with crops of this set's images (TrainConfig, binary), at most `samples` of them. */
  readonly quantize?: { readonly calibration: Uint8Array; readonly samples: number; readonly maxApDrop: number };
}

export interface ImportOutcome {
  /** Why the model cannot serve its manifest; when any, nothing else was measured. */
  readonly problems: string[];
  /** The model is quantized already (it holds int8 operators): it is stored and served as the int8 file. */
  readonly quantized?: boolean;
  /** KeypointMetrics (binary) of the fp32 model on the AP set. */
  readonly fp32Metrics?: Uint8Array;
  readonly int8?: Uint8Array;
  readonly int8Metrics?: Uint8Array;
  readonly gate?: { passed: boolean; maxApDrop: number; message: string; attempts: { strategy: string; calibrator: string; fp32Ap: number; int8Ap: number; passed: boolean }[] };
}

/** The output names a detector head has when its manifest names none (the layouts of DetectorHead). */
const HEAD_OUTPUTS: Partial<Record<DetectorHead, readonly string[]>> = {
  [DetectorHead.CENTERNET]: ["centers", "sizes", "offsets"],
  [DetectorHead.RTMDET]: ["dets", "labels"],
  [DetectorHead.BOXES_SCORES]: ["boxes", "scores"],
};

/** A detector's load: the file loads, its input and outputs exist, and a whole-frame batch runs. */
async function detectorProblems(manifest: ModelManifest, bytes: Uint8Array): Promise<string[]> {
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(bytes, { logSeverityLevel: 3 });
  } catch (error) {
    return [`the file is not a loadable ONNX model: ${modelFailureReason(error)}`];
  }
  try {
    const problems: string[] = [];
    const input = manifest.input;
    const inputName = input?.name ?? "";
    if (!session.inputNames.includes(inputName)) problems.push(`the model has no input named ${inputName} (its inputs: ${session.inputNames.join(", ")})`);
    const detector = manifest.detector;
    const outputs = detector !== undefined && detector.outputNames.length > 0 ? detector.outputNames : (HEAD_OUTPUTS[detector?.head ?? DetectorHead.UNSPECIFIED] ?? []);
    for (const name of outputs) if (!session.outputNames.includes(name)) problems.push(`the model has no output named ${name} (its outputs: ${session.outputNames.join(", ")})`);
    if (problems.length > 0) return problems;
    const [w, h] = [input?.width ?? 0, input?.height ?? 0];
    try {
      await session.run({ [inputName]: new ort.Tensor("float32", new Float32Array(3 * w * h), [1, 3, h, w]) });
    } catch (error) {
      problems.push(`a ${w}x${h} frame fails: ${modelFailureReason(error)}`);
    }
    return problems;
  } finally {
    await session.release();
  }
}

async function evaluationSet(config: Uint8Array, roots: DataRoots, schema: KeypointSchema): Promise<EvaluationSet> {
  return prepareValidation(fromBinary(TrainConfigSchema, config), roots, schema);
}

/**
 * An imported model checked as an inferencer checks a load (every problem), then, when asked, its COCO AP on
 * the caller's set and the int8 gate's verdict. Runs in the import worker: onnxruntime never runs on the
 * service's event loop.
 */
export async function checkImport(init: ImportInit): Promise<ImportOutcome> {
  const int8 = quantizedOps(init.model);
  // Quantizing a quantized graph again would stack a second, lossier rounding on the first.
  if (init.quantize !== undefined && int8.length > 0) return { problems: [`the model is int8 already (${int8.join(", ")}): import it without --quantize`] };
  const outcome = await checkModel(init);
  return outcome.problems.length > 0 ? outcome : { ...outcome, quantized: int8.length > 0 };
}

/** Operators only a quantized graph holds (QDQ pairs, fused QLinear kernels, integer convolutions). */
const INT8_OPS = /(^|\.)(QuantizeLinear|DequantizeLinear|DynamicQuantizeLinear|QLinear\w+|ConvInteger|MatMulInteger)$/;

/** The int8 operators of a model, "QLinearConv x22" each; empty for a float model or an unreadable file. */
export function quantizedOps(bytes: Uint8Array): string[] {
  let ops: Readonly<Record<string, number>>;
  try {
    ops = inspectModel(decodeModel(bytes)).ops;
  } catch {
    return [];
  }
  return Object.entries(ops)
    .filter(([op]) => INT8_OPS.test(op))
    .map(([op, count]) => `${op} x${count}`);
}

async function checkModel(init: ImportInit): Promise<ImportOutcome> {
  const manifest = fromBinary(ModelManifestSchema, init.manifest);
  if (manifest.kind === ModelKind.DETECTOR) return { problems: await detectorProblems(manifest, init.model) };
  const { spec, problems } = servingSpecFromManifest(manifest);
  if (spec === undefined) return { problems };
  const loadProblems = await modelLoadProblems(spec, init.model, { batch: IMPORT_CHECK_BATCH, intraOpThreads: 0, maxPixels: MAX_FRAME_PIXELS });
  if (loadProblems.length > 0 || init.validation === undefined) return { problems: loadProblems };
  const schema = schemaFromProto(manifest.keypointSchema);
  const validation = await evaluationSet(init.validation, init.roots, schema);
  const estimator = new PoseEstimator({ intraOpThreads: 0, maxPixels: MAX_FRAME_PIXELS });
  const evaluate = async (bytes: Uint8Array, version: string) => {
    await estimator.load({ ...spec, version }, bytes);
    try {
      return metricsMessage(await evaluateModel(estimator, version, validation, { flipTest: false, sigmas: schema.sigmas }));
    } finally {
      await estimator.release(version);
    }
  };
  try {
    const fp32 = await evaluate(init.model, "import-fp32");
    const fp32Metrics = toBinary(KeypointMetricsSchema, fp32);
    if (init.quantize === undefined) return { problems: [], fp32Metrics };
    const calibration = await evaluationSet(init.quantize.calibration, init.roots, schema);
    let int8Metrics: Uint8Array | undefined;
    let attempt = 0;
    const result = await runQuantizationGate(decodeModel(init.model), await poseCalibrationFeeds(spec, schema, calibration.images, init.quantize.samples, spec.inputName), {
      maxApDrop: init.quantize.maxApDrop,
      fp32Ap: fp32.ap,
      strategies: defaultStrategies("percentile", spec.outputNames),
      evaluate: async (bytes) => {
        const metrics = await evaluate(bytes, `import-int8-${attempt++}`);
        int8Metrics = toBinary(KeypointMetricsSchema, metrics);
        return metrics.ap;
      },
      quantize: { skipSqnr: true },
    });
    const gate = {
      passed: result.passed,
      maxApDrop: result.maxApDrop,
      message: result.message,
      attempts: result.attempts.map((a) => ({ strategy: a.strategy, calibrator: a.calibrator, fp32Ap: result.fp32Ap, int8Ap: a.int8Ap, passed: a.passed })),
    };
    const int8 = result.accepted?.bytes;
    return { problems: [], fp32Metrics, gate, ...(int8 === undefined || int8Metrics === undefined ? {} : { int8, int8Metrics }) };
  } finally {
    await estimator.close();
  }
}
