import { clone, create, fromBinary, isMessage, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { context as otelContext, SpanKind, trace, type Context } from "@opentelemetry/api";
import {
  ModelArtifactSchema,
  ModelManifestSchema,
  ModelRefSchema,
  type ModelArtifact,
  type ModelManifest,
  type Precision,
} from "@poseloop/proto/poseloop/common/v1/model_pb";
import {
  CandidateVersionSchema,
  ModelPublishedSchema,
  PromotionDecisionSchema,
  PromotionMode,
  PromotionVerdict,
  PromotionPolicySchema,
  ServingVersionSchema,
  type CandidateVersion,
  type ModelPublished,
  type PromotionDecision,
  type PromotionPolicy,
  type ServingVersion,
} from "@poseloop/proto/poseloop/registry/v1/registry_pb";
import { AppError, Code, silentLogger, type Logger } from "@poseloop/core";
import { extractFromHeaders, injectIntoHeaders, traceContextToRecord, withSpan, type HeadersCarrier } from "@poseloop/telemetry";
import { randomBytes } from "node:crypto";
import { DigestAccumulator, isDigest } from "./digest.js";
import {
  artifactObjectName,
  assertModelName,
  assertVersion,
  MODEL_PUBLISHED_PATTERN,
  modelPromotionSubject,
  modelPublishedSubject,
  RegistryBuckets,
} from "./names.js";
import { isTrialMode, policyMode, promotionPolicyProblems, withTrialDefaults } from "./promotion-policy.js";
import type { BlobSource, BlobStore, Bus, EventBus, KeyValueStore, KvEntry } from "./types.js";

/** The serving version of a model name at one revision of the registry. */
export interface ServingEntry {
  readonly record: ServingVersion;
  /** Pass it back as expectedRevision to change the serving version only if nobody else did meanwhile. */
  readonly revision: number;
}

/** One file of a version to publish. */
export interface PublishFile {
  /** File name within the version, e.g. "model.onnx", "model.int8.onnx". */
  readonly file: string;
  readonly data: BlobSource;
  readonly precision: Precision;
}

export interface PublishRequest {
  /** The version's manifest; model.name is required, model.version is generated when empty. */
  readonly manifest: MessageInitShape<typeof ModelManifestSchema>;
  readonly files: readonly PublishFile[];
  /** The file that serves this version (its digest goes into manifest.model.digest). */
  readonly servingFile: string;
  /** Make it the serving version. */
  readonly promote: boolean;
  /** Who publishes (a job id, a user). */
  readonly setBy: string;
  readonly reason?: string;
  readonly signal?: AbortSignal;
}

export interface PublishResult {
  readonly manifest: ModelManifest;
  readonly event: ModelPublished;
  /** The serving entry after promotion; absent when not promoted. */
  readonly serving?: ServingEntry;
  /** The entry that served before the promotion. */
  readonly previous?: ServingEntry;
}

export interface PublishedEvent {
  readonly event: ModelPublished;
  /** The publisher's trace context, to link consumer spans to the publish span. */
  readonly context: Context;
}

/** The version on trial for a model name, at one revision of its candidate record. */
export interface CandidateEntry {
  readonly record: CandidateVersion;
  /** Pass it to concludeTrial: only one inferencer may end a trial. */
  readonly revision: number;
}

/** The registry's key-value buckets and event bus. */
export interface RegistryStores {
  readonly blobs: BlobStore;
  readonly serving: KeyValueStore;
  readonly policies: KeyValueStore;
  readonly candidates: KeyValueStore;
  readonly promotions: KeyValueStore;
  readonly events: EventBus;
}

const MANIFEST_FILE = "manifest.pb";

/**
 * The model registry: artifacts in a blob store (SHA-256 verified on every read), the serving version of
 * each model name in a key-value bucket (every change a compare-and-set; its history is the rollback list),
 * and a ModelPublished event per publication carrying the publisher's trace context. The same class runs on
 * NATS JetStream and on the embedded bus.
 */
export class ModelRegistry {
  readonly #blobs: BlobStore;
  readonly #serving: KeyValueStore;
  readonly #policies: KeyValueStore;
  readonly #candidates: KeyValueStore;
  readonly #promotions: KeyValueStore;
  readonly #events: EventBus;
  readonly #logger: Logger;

  constructor(stores: RegistryStores, logger: Logger = silentLogger) {
    this.#blobs = stores.blobs;
    this.#serving = stores.serving;
    this.#policies = stores.policies;
    this.#candidates = stores.candidates;
    this.#promotions = stores.promotions;
    this.#events = stores.events;
    this.#logger = logger;
  }

  static async open(bus: Bus, logger?: Logger): Promise<ModelRegistry> {
    const [blobs, serving, policies, candidates, promotions, events] = await Promise.all([
      bus.blobStore(RegistryBuckets.artifacts),
      bus.keyValueStore(RegistryBuckets.serving, { history: 64 }),
      bus.keyValueStore(RegistryBuckets.policies, { history: 8 }),
      bus.keyValueStore(RegistryBuckets.candidates, { history: 8 }),
      bus.keyValueStore(RegistryBuckets.promotions, { history: 64 }),
      bus.events(),
    ]);
    return new ModelRegistry({ blobs, serving, policies, candidates, promotions, events }, logger);
  }

  /** Stores an artifact under `objectName` and describes it. */
  async putArtifact(objectName: string, data: BlobSource, precision: Precision, signal?: AbortSignal): Promise<ModelArtifact> {
    const info = await this.#blobs.put(objectName, data, signal === undefined ? {} : { signal });
    return create(ModelArtifactSchema, { objectName, digest: info.digest, sizeBytes: BigInt(info.sizeBytes), precision });
  }

  /**
   * The bytes of an artifact, checked against `expectedDigest` (the manifest's) or else the digest recorded
   * at upload: a mismatch is DATA_LOSS and no bytes are returned. NOT_FOUND when absent.
   */
  async getArtifact(objectName: string, options: { expectedDigest?: string; signal?: AbortSignal; maxBytes?: number } = {}): Promise<Uint8Array> {
    if (options.expectedDigest !== undefined && !isDigest(options.expectedDigest)) {
      throw new AppError(Code.INVALID_ARGUMENT, `invalid digest ${JSON.stringify(options.expectedDigest)}`);
    }
    const blob = await this.#blobs.get(objectName, options.signal === undefined ? {} : { signal: options.signal });
    if (blob === undefined) throw new AppError(Code.NOT_FOUND, `artifact ${objectName} not found`);
    const expected = options.expectedDigest ?? blob.info.digest;
    if (expected !== blob.info.digest) {
      throw new AppError(Code.DATA_LOSS, `artifact ${objectName} is not the one the manifest names (digest ${blob.info.digest}, expected ${expected})`);
    }
    const maxBytes = options.maxBytes ?? Number.MAX_SAFE_INTEGER;
    if (blob.info.sizeBytes > maxBytes) {
      throw new AppError(Code.RESOURCE_EXHAUSTED, `artifact ${objectName} is ${blob.info.sizeBytes} bytes, above the limit of ${maxBytes}`);
    }
    const out = new Uint8Array(blob.info.sizeBytes);
    const digest = new DigestAccumulator();
    for await (const chunk of blob.data) {
      if (digest.sizeBytes + chunk.byteLength > out.byteLength) {
        throw new AppError(Code.DATA_LOSS, `artifact ${objectName} is longer than its recorded ${blob.info.sizeBytes} bytes`);
      }
      out.set(chunk, digest.sizeBytes);
      digest.update(chunk);
    }
    const actual = digest.digest();
    if (digest.sizeBytes !== out.byteLength || actual !== expected) {
      throw new AppError(Code.DATA_LOSS, `artifact ${objectName} is corrupt: its bytes hash to ${actual}, expected ${expected}`);
    }
    return out;
  }

  /** The manifest of a published version. */
  async getManifest(modelName: string, version: string, signal?: AbortSignal): Promise<ModelManifest> {
    assertModelName(modelName);
    assertVersion(version);
    const bytes = await this.getArtifact(artifactObjectName(modelName, version, MANIFEST_FILE), signal === undefined ? {} : { signal });
    return fromBinary(ModelManifestSchema, bytes);
  }

  /** Versions of a model name that have a manifest, oldest first. */
  async listVersions(modelName: string): Promise<string[]> {
    assertModelName(modelName);
    const blobs = await this.#blobs.list(`${modelName}/`);
    return blobs
      .filter((blob) => blob.name.endsWith(`/${MANIFEST_FILE}`))
      .map((blob) => blob.name.split("/")[1] ?? "")
      .sort();
  }

  /**
   * Publishes a version: uploads its files, writes its manifest (with every file's digest), makes it the
   * serving version when asked (compare-and-set against the version serving when publishing began), and
   * announces it. The publish span is a PRODUCER whose context travels in the event's headers and in the
   * serving record.
   */
  async publish(request: PublishRequest): Promise<PublishResult> {
    const name = request.manifest.model?.name ?? "";
    assertModelName(name);
    const version = request.manifest.model?.version || newVersion();
    assertVersion(version);
    if (!request.files.some((file) => file.file === request.servingFile)) {
      throw new AppError(Code.INVALID_ARGUMENT, `serving file ${request.servingFile} is not among the published files`);
    }
    // Looked up per call: tests and services may install the tracer provider after this module loads.
    return withSpan(
      trace.getTracer("@poseloop/bus"),
      "registry.publish",
      { kind: SpanKind.PRODUCER, attributes: { "poseloop.model.name": name, "poseloop.model.version": version, "messaging.system": "nats" } },
      async (span) => {
        const signal = request.signal;
        const before = request.promote ? await this.getServing(name) : undefined;
        const artifacts: ModelArtifact[] = [];
        for (const file of request.files) {
          artifacts.push(await this.putArtifact(artifactObjectName(name, version, file.file), file.data, file.precision, signal));
        }
        const serving = artifacts[request.files.findIndex((file) => file.file === request.servingFile)] as ModelArtifact;
        const manifest = isMessage(request.manifest, ModelManifestSchema)
          ? clone(ModelManifestSchema, request.manifest)
          : create(ModelManifestSchema, request.manifest);
        manifest.model = create(ModelRefSchema, { name, version, digest: serving.digest });
        manifest.artifacts = artifacts;
        manifest.createdAt ??= timestampNow();
        const manifestObject = artifactObjectName(name, version, MANIFEST_FILE);
        const manifestArtifact = await this.putArtifact(manifestObject, toBinary(ModelManifestSchema, manifest), manifest.precision, signal);
        span.setAttribute("poseloop.model.digest", serving.digest);
        if (manifest.trainingJobId !== "") span.setAttribute("poseloop.training.job_id", manifest.trainingJobId);

        let entry: ServingEntry | undefined;
        if (request.promote) {
          entry = await this.setServing(name, manifest.model, {
            expectedRevision: before?.revision ?? 0,
            setBy: request.setBy,
            reason: request.reason ?? "published",
          });
        }
        const event = create(ModelPublishedSchema, {
          manifest,
          artifacts: [...artifacts, manifestArtifact],
          promoted: request.promote,
          publishedAt: timestampNow(),
        });
        const headers: Record<string, string> = {};
        injectIntoHeaders(recordCarrier(headers));
        await this.#events.publish(modelPublishedSubject(name), toBinary(ModelPublishedSchema, event), headers);
        this.#logger.info("model published", { model: name, version, digest: serving.digest, promoted: request.promote });
        return {
          manifest,
          event,
          ...(entry === undefined ? {} : { serving: entry }),
          ...(before === undefined ? {} : { previous: before }),
        };
      },
    );
  }

  /** The version serving `modelName` now, with its revision; undefined before the first promotion. */
  async getServing(modelName: string): Promise<ServingEntry | undefined> {
    assertModelName(modelName);
    const entry = await this.#serving.get(modelName);
    return entry === undefined ? undefined : toServingEntry(entry);
  }

  /**
   * Makes `model` serve `modelName` if the serving record is still at `expectedRevision` (0: none yet);
   * ABORTED when someone changed it meanwhile. The version's manifest must exist.
   */
  async setServing(
    modelName: string,
    model: MessageInitShape<typeof ModelRefSchema>,
    options: { expectedRevision: number; setBy: string; reason?: string },
  ): Promise<ServingEntry> {
    assertModelName(modelName);
    const version = model.version ?? "";
    assertVersion(version);
    const manifest = await this.getManifest(modelName, version).catch((error: unknown) => {
      if (AppError.is(error, Code.NOT_FOUND)) throw new AppError(Code.FAILED_PRECONDITION, `${modelName} version ${version} is not published`);
      throw error;
    });
    const record = create(ServingVersionSchema, {
      model: manifest.model ?? create(ModelRefSchema, model),
      manifestObject: artifactObjectName(modelName, version, MANIFEST_FILE),
      since: timestampNow(),
      setBy: options.setBy,
      reason: options.reason ?? "",
      traceContext: traceContextToRecord(),
    });
    const bytes = toBinary(ServingVersionSchema, record);
    const revision =
      options.expectedRevision === 0
        ? await this.#serving.create(modelName, bytes)
        : await this.#serving.update(modelName, bytes, options.expectedRevision);
    this.#logger.info("serving version set", { model: modelName, version, revision, set_by: options.setBy });
    return { record, revision };
  }

  /** Every serving record of `modelName` still kept, oldest first, the current one last. */
  async history(modelName: string): Promise<ServingEntry[]> {
    assertModelName(modelName);
    return (await this.#serving.history(modelName)).map(toServingEntry);
  }

  /** The version to go back to: the latest earlier record whose version differs from the current one. */
  async rollbackTarget(modelName: string): Promise<ServingEntry | undefined> {
    const history = await this.history(modelName);
    const current = history.at(-1);
    if (current === undefined) return undefined;
    for (let i = history.length - 2; i >= 0; i--) {
      const entry = history[i];
      if (entry === undefined) continue;
      if (entry.record.model?.version !== current.record.model?.version) return entry;
    }
    return undefined;
  }

  /** Moves the serving version back to rollbackTarget(), compare-and-set against the current record. */
  async rollback(modelName: string, options: { setBy: string; reason?: string }): Promise<{ serving: ServingEntry; previous: ServingEntry }> {
    const current = await this.getServing(modelName);
    const target = await this.rollbackTarget(modelName);
    if (current === undefined || target === undefined || target.record.model === undefined) {
      throw new AppError(Code.FAILED_PRECONDITION, `${modelName} has no earlier version to roll back to`);
    }
    const serving = await this.setServing(modelName, target.record.model, {
      expectedRevision: current.revision,
      setBy: options.setBy,
      reason: options.reason ?? `rollback from ${current.record.model?.version ?? "?"}`,
    });
    return { serving, previous: current };
  }

  /** The serving record of `modelName` now (if any), then every change, until `signal` aborts. */
  async *watchServing(modelName: string, signal: AbortSignal): AsyncGenerator<ServingEntry> {
    assertModelName(modelName);
    for await (const entry of this.#serving.watch(modelName, signal)) yield toServingEntry(entry);
  }

  /** The promotion policy of `modelName`; undefined when none was set (publications then always promote). */
  async getPolicy(modelName: string): Promise<PromotionPolicy | undefined> {
    assertModelName(modelName);
    const entry = await this.#policies.get(modelName);
    return entry === undefined ? undefined : fromBinary(PromotionPolicySchema, entry.value);
  }

  /**
   * Sets the promotion policy of `modelName`, with the trial defaults filled in. INVALID_ARGUMENT listing every
   * problem when its bounds cannot be met; nothing is written then.
   */
  async setPolicy(modelName: string, init: MessageInitShape<typeof PromotionPolicySchema>, options: { setBy: string }): Promise<PromotionPolicy> {
    assertModelName(modelName);
    const policy = withTrialDefaults(init);
    const problems = promotionPolicyProblems(policy);
    if (problems.length > 0) {
      throw new AppError(Code.INVALID_ARGUMENT, `the promotion policy of ${modelName} is invalid: ${problems.join("; ")}`, { problems });
    }
    policy.setBy = options.setBy;
    policy.updatedAt = timestampNow();
    await this.#policies.put(modelName, toBinary(PromotionPolicySchema, policy));
    this.#logger.info("promotion policy set", { model: modelName, mode: PromotionMode[policy.mode], set_by: options.setBy });
    return policy;
  }

  /** The version on canary or shadow trial for `modelName`, if any. */
  async getCandidate(modelName: string): Promise<CandidateEntry | undefined> {
    assertModelName(modelName);
    const entry = await this.#candidates.get(modelName);
    return entry === undefined ? undefined : toCandidateEntry(entry);
  }

  /** The candidate record now (when there is one), then every change, until `signal` aborts. */
  async *watchCandidate(modelName: string, signal: AbortSignal): AsyncGenerator<CandidateEntry> {
    assertModelName(modelName);
    for await (const entry of this.#candidates.watch(modelName, signal)) yield toCandidateEntry(entry);
  }

  /**
   * Puts a published version on canary or shadow trial against the version serving now, replacing any trial
   * under way (a newer publication supersedes it), and records the decision. FAILED_PRECONDITION when nothing
   * serves yet (there is nothing to compare with: promote it instead) or the policy runs no trials.
   */
  async startTrial(
    modelName: string,
    model: MessageInitShape<typeof ModelRefSchema>,
    policy: PromotionPolicy,
    options: { setBy: string; reason?: string },
  ): Promise<CandidateEntry> {
    const version = model.version ?? "";
    assertVersion(version);
    if (!isTrialMode(policyMode(policy))) throw new AppError(Code.FAILED_PRECONDITION, `the policy of ${modelName} runs no canary or shadow trial`);
    const manifest = await this.getManifest(modelName, version);
    const serving = await this.getServing(modelName);
    if (serving?.record.model === undefined) throw new AppError(Code.FAILED_PRECONDITION, `${modelName} has no serving version to try ${version} against`);
    const record = create(CandidateVersionSchema, {
      model: manifest.model ?? create(ModelRefSchema, model),
      baseline: serving.record.model,
      policy,
      since: timestampNow(),
      setBy: options.setBy,
      traceContext: traceContextToRecord(),
    });
    const revision = await this.#candidates.put(modelName, toBinary(CandidateVersionSchema, record));
    await this.recordDecision(modelName, {
      candidate: record.model,
      serving: serving.record.model,
      mode: policyMode(policy),
      verdict: PromotionVerdict.TRIAL_STARTED,
      reason: options.reason ?? `${PromotionMode[policyMode(policy)].toLowerCase()} trial of ${version} against ${serving.record.model.version}`,
      decidedBy: options.setBy,
    });
    return { record, revision };
  }

  /**
   * Ends the trial at `revision` with a verdict: PROMOTED makes the candidate serve (compare-and-set against the
   * baseline still serving), ROLLED_BACK leaves the serving version as it is. Returns undefined, deciding
   * nothing, when the trial was already ended or replaced (another inferencer got there first) or its baseline
   * no longer serves.
   */
  async concludeTrial(
    modelName: string,
    revision: number,
    outcome: { verdict: PromotionVerdict.PROMOTED | PromotionVerdict.ROLLED_BACK; reason: string; decidedBy: string; agreement?: MessageInitShape<typeof PromotionDecisionSchema>["agreement"] },
  ): Promise<PromotionDecision | undefined> {
    const current = await this.getCandidate(modelName);
    if (current === undefined || current.revision !== revision || current.record.model === undefined) return undefined;
    const serving = await this.getServing(modelName);
    if (serving === undefined || serving.record.model?.version !== current.record.baseline?.version) {
      await this.#candidates.update(modelName, toBinary(CandidateVersionSchema, create(CandidateVersionSchema)), revision).catch(() => undefined);
      return undefined;
    }
    try {
      await this.#candidates.update(modelName, toBinary(CandidateVersionSchema, create(CandidateVersionSchema)), revision);
    } catch (error) {
      if (AppError.is(error, Code.ABORTED)) return undefined;
      throw error;
    }
    if (outcome.verdict === PromotionVerdict.PROMOTED) {
      await this.setServing(modelName, current.record.model, { expectedRevision: serving.revision, setBy: outcome.decidedBy, reason: outcome.reason });
    }
    return this.recordDecision(modelName, {
      candidate: current.record.model,
      serving: serving.record.model,
      mode: policyMode(current.record.policy),
      verdict: outcome.verdict,
      reason: outcome.reason,
      decidedBy: outcome.decidedBy,
      ...(outcome.agreement === undefined ? {} : { agreement: outcome.agreement }),
    });
  }

  /**
   * Keeps a promotion decision in the model's decision log and announces it on
   * poseloop.models.<name>.promotion, inside a span carrying both versions and, where measured, both APs.
   */
  async recordDecision(modelName: string, init: MessageInitShape<typeof PromotionDecisionSchema>): Promise<PromotionDecision> {
    assertModelName(modelName);
    return withSpan(
      trace.getTracer("@poseloop/bus"),
      "registry.promotion_decision",
      { kind: SpanKind.PRODUCER, attributes: { "poseloop.model.name": modelName, "messaging.system": "nats" } },
      async (span) => {
        const decision = create(PromotionDecisionSchema, init);
        decision.decidedAt ??= timestampNow();
        decision.traceContext = traceContextToRecord();
        span.setAttributes({
          "poseloop.promotion.verdict": PromotionVerdict[decision.verdict],
          "poseloop.promotion.mode": PromotionMode[decision.mode],
          "poseloop.promotion.candidate": decision.candidate?.version ?? "",
          "poseloop.promotion.serving": decision.serving?.version ?? "",
          ...(decision.candidateAp === undefined ? {} : { "poseloop.promotion.candidate_ap": decision.candidateAp }),
          ...(decision.servingAp === undefined ? {} : { "poseloop.promotion.serving_ap": decision.servingAp }),
        });
        const bytes = toBinary(PromotionDecisionSchema, decision);
        await this.#promotions.put(modelName, bytes);
        const headers: Record<string, string> = {};
        injectIntoHeaders(recordCarrier(headers));
        await this.#events.publish(modelPromotionSubject(modelName), bytes, headers);
        this.#logger.info("promotion decision", {
          model: modelName,
          verdict: PromotionVerdict[decision.verdict],
          candidate: decision.candidate?.version,
          serving: decision.serving?.version,
          candidate_ap: decision.candidateAp,
          serving_ap: decision.servingAp,
          reason: decision.reason,
        });
        return decision;
      },
    );
  }

  /** The promotion decisions of `modelName` still kept, oldest first. */
  async decisions(modelName: string): Promise<PromotionDecision[]> {
    assertModelName(modelName);
    return (await this.#promotions.history(modelName)).map((entry) => fromBinary(PromotionDecisionSchema, entry.value));
  }

  /** PromotionDecisions from now on, for one model name or all ("*"). */
  async *subscribeDecisions(modelName: string, signal: AbortSignal): AsyncGenerator<PromotionDecision> {
    if (modelName !== "*") assertModelName(modelName);
    for await (const message of this.#events.subscribe(modelPromotionSubject(modelName), signal)) {
      try {
        yield fromBinary(PromotionDecisionSchema, message.data);
      } catch (error) {
        this.#logger.warn("ignoring an unreadable PromotionDecision event", { subject: message.subject, err: error });
      }
    }
  }

  /** ModelPublished events from now on, for one model name or all ("*"), with the publisher's context. */
  async *subscribePublished(modelName: string, signal: AbortSignal): AsyncGenerator<PublishedEvent> {
    if (modelName !== "*") assertModelName(modelName);
    const pattern = modelName === "*" ? MODEL_PUBLISHED_PATTERN : modelPublishedSubject(modelName);
    for await (const message of this.#events.subscribe(pattern, signal)) {
      let event: ModelPublished;
      try {
        event = fromBinary(ModelPublishedSchema, message.data);
      } catch (error) {
        this.#logger.warn("ignoring an unreadable ModelPublished event", { subject: message.subject, err: error });
        continue;
      }
      yield { event, context: extractFromHeaders(recordCarrier({ ...message.headers }), otelContext.active()) };
    }
  }
}

/** A version name that sorts by time: "20261127-231500-a1b2c3". */
export function newVersion(now: Date = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15);
  return `${stamp}-${randomBytes(3).toString("hex")}`;
}

function toCandidateEntry(entry: KvEntry): CandidateEntry {
  return { record: fromBinary(CandidateVersionSchema, entry.value), revision: entry.revision };
}

function toServingEntry(entry: KvEntry): ServingEntry {
  return { record: fromBinary(ServingVersionSchema, entry.value), revision: entry.revision };
}

function recordCarrier(record: Record<string, string>): HeadersCarrier {
  return {
    get: (key) => record[key] ?? "",
    set: (key, value) => {
      record[key] = value;
    },
    has: (key) => key in record,
    keys: () => Object.keys(record),
  };
}
