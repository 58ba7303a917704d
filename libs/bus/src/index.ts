export type { BlobInfo, BlobSource, BlobStore, Bus, BusMessage, EventBus, JobDelivery, JobQueue, KeyValueStore, KvEntry } from "./types.js";
export { DEFAULT_MAX_DELIVERIES } from "./types.js";
export { chunksOf, DigestAccumulator, fromNatsDigest, isDigest, sha256Digest } from "./digest.js";
export {
  artifactObjectName,
  assertModelName,
  assertVersion,
  MODEL_PUBLISHED_PATTERN,
  modelNameProblems,
  modelPromotionSubject,
  modelPublishedSubject,
  RegistryBuckets,
  subjectMatches,
} from "./names.js";
export { ModelRegistry, newVersion } from "./model-registry.js";
export type { CandidateEntry, PublishedEvent, PublishFile, PublishRequest, PublishResult, RegistryStores, ServingEntry } from "./model-registry.js";
export { defaultPolicy, isTrialMode, policyMode, promotionPolicyProblems, TRIAL_DEFAULTS, withTrialDefaults } from "./promotion-policy.js";
export { connectNats } from "./nats/connection.js";
export type { NatsConnectOptions, NatsSecurityOptions } from "./nats/connection.js";
export { NatsBus } from "./nats/bus.js";
export { EmbeddedBus } from "./embedded/bus.js";
export { openBus } from "./open-bus.js";
export type { BusOptions } from "./open-bus.js";
export { busOptionsFromEnv } from "./config.js";
export type { BusSettings } from "./config.js";
export { natsUrlSecrets, redactNatsUrl, redactSecrets } from "./nats/url-secrets.js";
