import { AppError, Code } from "@poseloop/core";

const MODEL_NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/;
const VERSION = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** Problems with a model name (empty when valid): it becomes a subject token, a KV key and a path segment. */
export function modelNameProblems(name: string): string[] {
  return MODEL_NAME.test(name)
    ? []
    : [`model name ${JSON.stringify(name)} must be 1-64 lowercase letters, digits, '-' or '_', starting with a letter or digit`];
}

export function assertModelName(name: string): void {
  const problems = modelNameProblems(name);
  if (problems.length > 0) throw new AppError(Code.INVALID_ARGUMENT, problems.join("; "), { problems });
}

export function assertVersion(version: string): void {
  if (!VERSION.test(version)) {
    throw new AppError(Code.INVALID_ARGUMENT, `model version ${JSON.stringify(version)} must be 1-128 letters, digits, '.', '-' or '_'`);
  }
}

/** Object names of a model version's files: "<name>/<version>/<file>". */
export function artifactObjectName(modelName: string, version: string, file: string): string {
  return `${modelName}/${version}/${file}`;
}

/** The subject a version's publication is announced on. */
export function modelPublishedSubject(modelName: string): string {
  return `poseloop.models.${modelName}.published`;
}

/** The subject a model name's promotion decisions are announced on. */
export function modelPromotionSubject(modelName: string): string {
  return `poseloop.models.${modelName}.promotion`;
}

/** Subject pattern of every model publication. */
export const MODEL_PUBLISHED_PATTERN = "poseloop.models.*.published";

/** Buckets and streams of the registry. */
export const RegistryBuckets = {
  artifacts: "poseloop-models",
  serving: "poseloop-serving",
  /** Each model name's PromotionPolicy. */
  policies: "poseloop-policies",
  /** The version on canary or shadow trial per model name, if any. */
  candidates: "poseloop-candidates",
  /** Each model name's PromotionDecisions (the key's history is the decision log). */
  promotions: "poseloop-promotions",
} as const;

/**
 * Whether `subject` matches a NATS-style pattern: tokens split on ".", "*" matches one token, ">" matches
 * one or more trailing tokens.
 */
export function subjectMatches(pattern: string, subject: string): boolean {
  const p = pattern.split(".");
  const s = subject.split(".");
  for (let i = 0; i < p.length; i++) {
    const token = p[i];
    if (token === ">") return s.length > i;
    if (i >= s.length) return false;
    if (token !== "*" && token !== s[i]) return false;
  }
  return p.length === s.length;
}
