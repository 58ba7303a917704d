import { encodeModel, type ModelProto } from "@poseloop/onnx";
import type { CalibrationFeeds, CalibratorKind } from "./calibration.js";
import { quantizeModel, type QuantizedModel, type QuantizeOptions } from "./quantize.js";

/** One strategy the gate tries, in order. */
export interface GateStrategy {
  readonly name: string;
  readonly calibrator: CalibratorKind;
  readonly keepFp32: readonly string[];
  readonly percentile?: number;
}

export interface GateAttempt {
  readonly strategy: string;
  readonly calibrator: CalibratorKind;
  readonly int8Ap: number;
  /** AP points lost: (fp32 AP − int8 AP) · 100. */
  readonly apDrop: number;
  readonly passed: boolean;
}

export interface GateResult {
  readonly passed: boolean;
  readonly fp32Ap: number;
  readonly maxApDrop: number;
  readonly attempts: readonly GateAttempt[];
  /** The first int8 model within the limit. */
  readonly accepted?: QuantizedModel;
  /** Why nothing passed, for the job's events. */
  readonly message: string;
}

/**
 * The strategies of the AP gate, in order: everything int8 with the configured calibrator; the head kept in
 * fp32; then the other calibrators (percentile, entropy, minmax) with the head in fp32.
 */
export function defaultStrategies(calibrator: CalibratorKind, headNodes: readonly string[], percentile = 99.999): GateStrategy[] {
  const others = (["percentile", "entropy", "minmax"] as const).filter((kind) => kind !== calibrator);
  return [
    { name: "all-int8", calibrator, keepFp32: [], percentile },
    ...(headNodes.length > 0 ? [{ name: "head-fp32", calibrator, keepFp32: headNodes, percentile }] : []),
    ...others.map((kind) => ({ name: `${kind}-head-fp32`, calibrator: kind, keepFp32: headNodes, percentile })),
  ];
}

/**
 * Quantizes and measures until an int8 model loses at most `maxApDrop` AP points against fp32 on the
 * validation set (`evaluate` returns AP in [0, 1]), trying the strategies in order. Reports every attempt.
 */
export async function runQuantizationGate(
  fp32: ModelProto,
  feeds: CalibrationFeeds,
  options: {
    readonly maxApDrop: number;
    readonly evaluate: (model: Uint8Array) => Promise<number>;
    readonly strategies: readonly GateStrategy[];
    readonly fp32Ap?: number;
    readonly quantize?: Omit<QuantizeOptions, "calibrator" | "keepFp32" | "percentile">;
  },
): Promise<GateResult> {
  const fp32Ap = options.fp32Ap ?? (await options.evaluate(encodeModel(fp32)));
  const attempts: GateAttempt[] = [];
  for (const strategy of options.strategies) {
    const quantized = await quantizeModel(fp32, feeds, { ...options.quantize, calibrator: strategy.calibrator, keepFp32: strategy.keepFp32, ...(strategy.percentile === undefined ? {} : { percentile: strategy.percentile }) });
    const int8Ap = await options.evaluate(quantized.bytes);
    const apDrop = (fp32Ap - int8Ap) * 100;
    const passed = apDrop <= options.maxApDrop;
    attempts.push({ strategy: strategy.name, calibrator: strategy.calibrator, int8Ap, apDrop, passed });
    if (passed) return { passed, fp32Ap, maxApDrop: options.maxApDrop, attempts, accepted: quantized, message: `${strategy.name} loses ${apDrop.toFixed(2)} AP points` };
  }
  const best = attempts.reduce<GateAttempt | undefined>((a, b) => (a === undefined || b.apDrop < a.apDrop ? b : a), undefined);
  return {
    passed: false,
    fp32Ap,
    maxApDrop: options.maxApDrop,
    attempts,
    message: `no int8 model within ${options.maxApDrop} AP points of fp32 (AP ${(fp32Ap * 100).toFixed(1)}); the best, ${best?.strategy ?? "none"}, lost ${best?.apDrop.toFixed(2) ?? "?"}`,
  };
}
