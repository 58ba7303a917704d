import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { PromotionMode, PromotionPolicySchema, type PromotionPolicy } from "@poseloop/proto/poseloop/registry/v1/registry_pb";

/**
 * What a CANARY or SHADOW policy measures when the one who sets it names no bound: a few hundred frames are
 * enough to see a broken model (its OKS against the serving model collapses) without holding a good one back
 * for long; 0.8 mean OKS is "the same person, the same joints" at COCO's keypoint sigmas.
 */
export const TRIAL_DEFAULTS = {
  canaryFraction: 0.1,
  windowFrames: 300,
  minMeanOks: 0.8,
  maxFailureRate: 0.01,
  maxLatencyRatio: 0,
} as const;

/** The policy of a model name that has none: promote every publication, as PoseLoop did before policies. */
export function defaultPolicy(): PromotionPolicy {
  return create(PromotionPolicySchema, { mode: PromotionMode.ALWAYS });
}

/** The mode a policy means: UNSPECIFIED is ALWAYS. */
export function policyMode(policy: PromotionPolicy | undefined): PromotionMode {
  const mode = policy?.mode ?? PromotionMode.ALWAYS;
  return mode === PromotionMode.UNSPECIFIED ? PromotionMode.ALWAYS : mode;
}

export function isTrialMode(mode: PromotionMode): boolean {
  return mode === PromotionMode.CANARY || mode === PromotionMode.SHADOW;
}

/** The policy with the trial defaults filled in where a CANARY or SHADOW policy names no value. */
export function withTrialDefaults(init: MessageInitShape<typeof PromotionPolicySchema>): PromotionPolicy {
  const policy = create(PromotionPolicySchema, init);
  if (!isTrialMode(policyMode(policy))) return policy;
  if (policyMode(policy) === PromotionMode.CANARY && policy.canaryFraction === 0) policy.canaryFraction = TRIAL_DEFAULTS.canaryFraction;
  if (policy.windowFrames === 0) policy.windowFrames = TRIAL_DEFAULTS.windowFrames;
  if (policy.minMeanOks === 0) policy.minMeanOks = TRIAL_DEFAULTS.minMeanOks;
  if (policy.maxFailureRate === 0) policy.maxFailureRate = TRIAL_DEFAULTS.maxFailureRate;
  return policy;
}

/** Every problem with a policy (empty when it can be met), each naming the field and the value. */
export function promotionPolicyProblems(policy: PromotionPolicy): string[] {
  const problems: string[] = [];
  const mode = policyMode(policy);
  if (!(mode in PromotionMode) || mode === PromotionMode.UNSPECIFIED) problems.push(`mode ${String(policy.mode)} is not a promotion mode`);
  const inUnit = (name: string, value: number, { open = false } = {}): void => {
    if (!Number.isFinite(value) || value < 0 || value > 1 || (open && value === 0)) {
      problems.push(`${name} ${value} must be ${open ? "in (0, 1]" : "in [0, 1]"}`);
    }
  };
  if (!Number.isFinite(policy.minApGain) || policy.minApGain < 0 || policy.minApGain >= 1) {
    problems.push(`min_ap_gain ${policy.minApGain} must be in [0, 1): AP is in [0, 1], so a gain of 1 or more can never be met`);
  }
  if (policy.referenceSet !== undefined && mode !== PromotionMode.IF_BETTER) problems.push("reference_set: only an if-better policy evaluates on a reference set");
  if (mode === PromotionMode.CANARY) inUnit("canary_fraction", policy.canaryFraction, { open: true });
  else if (policy.canaryFraction !== 0) problems.push(`canary_fraction ${policy.canaryFraction}: only a canary policy serves a share of streams`);
  if (isTrialMode(mode)) {
    if (!Number.isInteger(policy.windowFrames) || policy.windowFrames < 1) problems.push(`window_frames ${policy.windowFrames} must be at least 1`);
    inUnit("min_mean_oks", policy.minMeanOks);
    inUnit("max_failure_rate", policy.maxFailureRate);
    if (!Number.isFinite(policy.maxLatencyRatio) || policy.maxLatencyRatio < 0) problems.push(`max_latency_ratio ${policy.maxLatencyRatio} must be 0 (unbounded) or positive`);
    else if (policy.maxLatencyRatio > 0 && policy.maxLatencyRatio < 0.1) problems.push(`max_latency_ratio ${policy.maxLatencyRatio}: a candidate ten times faster than the serving model is not a bound anyone meets`);
  } else {
    for (const [name, value] of [
      ["window_frames", policy.windowFrames],
      ["min_mean_oks", policy.minMeanOks],
      ["max_failure_rate", policy.maxFailureRate],
      ["max_latency_ratio", policy.maxLatencyRatio],
      ["max_trial_seconds", policy.maxTrialSeconds],
    ] as const) {
      if (value !== 0) problems.push(`${name} ${value}: only canary and shadow policies run trials`);
    }
  }
  return problems;
}
