import type { ModelRef } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { PromotionMode, PromotionVerdict, type AgreementStats, type PromotionDecision } from "@poseloop/proto/poseloop/registry/v1/registry_pb";

/** The mode as the command line writes it: "always", "if-better", "canary", "shadow". */
export function promotionModeName(mode: PromotionMode): string {
  if (mode === PromotionMode.UNSPECIFIED) return "always";
  return (PromotionMode[mode] ?? `mode-${mode}`).toLowerCase().replaceAll("_", "-");
}

/** The modes `--mode` takes, by their command-line names. */
export const PROMOTION_MODES: Readonly<Record<string, PromotionMode>> = {
  always: PromotionMode.ALWAYS,
  "if-better": PromotionMode.IF_BETTER,
  canary: PromotionMode.CANARY,
  shadow: PromotionMode.SHADOW,
};

export function verdictName(verdict: PromotionVerdict): string {
  switch (verdict) {
    case PromotionVerdict.PROMOTED:
      return "promoted";
    case PromotionVerdict.REJECTED:
      return "rejected";
    case PromotionVerdict.TRIAL_STARTED:
      return "trial started";
    case PromotionVerdict.ROLLED_BACK:
      return "rolled back";
    default:
      return "?";
  }
}

function refText(ref: Pick<ModelRef, "name" | "version"> | undefined): string {
  return ref === undefined || ref.version === "" ? "none" : `${ref.name}@${ref.version}`;
}

/** "OKS 0.912 over 300 frames, failures 0.0% vs 0.0%, p95 41 vs 38 ms"; "" when nothing was compared. */
export function agreementText(agreement: AgreementStats | undefined): string {
  if (agreement === undefined || agreement.frames === 0n) return "";
  const percent = (rate: number): string => `${(rate * 100).toFixed(1)}%`;
  const parts = [`OKS ${agreement.meanOks.toFixed(3)} over ${agreement.frames} frames`, `failures ${percent(agreement.candidateFailureRate)} vs ${percent(agreement.servingFailureRate)}`];
  if (agreement.candidateP95Ms > 0 || agreement.servingP95Ms > 0) parts.push(`p95 ${agreement.candidateP95Ms.toFixed(0)} vs ${agreement.servingP95Ms.toFixed(0)} ms`);
  return parts.join(", ");
}

/**
 * What a publication's decision did, after "published <version>": "serving now", "serving now (AP 0.250 is
 * above serving 0.235 + 0.005)", "not promoted: AP 0.137 is not above serving 0.235 + 0.005", "on canary
 * trial against demo@v1 (the inferencers promote it or roll it back)".
 */
export function publicationOutcomeText(promoted: boolean, decision: PromotionDecision | undefined): string {
  if (decision === undefined || decision.verdict === PromotionVerdict.UNSPECIFIED) return promoted ? "serving now" : "published, not serving (promotion skipped)";
  switch (decision.verdict) {
    case PromotionVerdict.PROMOTED:
      return decision.candidateAp === undefined ? "serving now" : `serving now (${decision.reason})`;
    case PromotionVerdict.TRIAL_STARTED:
      return `on ${promotionModeName(decision.mode)} trial against ${refText(decision.serving)} (the inferencers promote it or roll it back)`;
    case PromotionVerdict.REJECTED:
      return `not promoted: ${decision.reason}`;
    default:
      return `${verdictName(decision.verdict)}: ${decision.reason}`;
  }
}

/**
 * A decision in a job's summary, after "published <version> — "; undefined for a promotion with nothing to
 * compare (always, the first version, by hand): the summary says what it always said.
 */
export function decisionSummaryText(decision: PromotionDecision): string | undefined {
  switch (decision.verdict) {
    case PromotionVerdict.PROMOTED:
      return decision.candidateAp === undefined ? undefined : `promoted: ${decision.reason}`;
    case PromotionVerdict.REJECTED:
      return `not promoted: ${decision.reason}`;
    case PromotionVerdict.TRIAL_STARTED:
      return `on ${promotionModeName(decision.mode)} trial against ${refText(decision.serving)}`;
    default:
      return `${verdictName(decision.verdict)}${decision.reason === "" ? "" : `: ${decision.reason}`}`;
  }
}
