import { create, equals, fromBinary, toBinary, toJsonString, type MessageInitShape } from "@bufbuild/protobuf";
import { modelNameProblems, sha256Digest, type KeyValueStore, type ModelRegistry } from "@poseloop/bus";
import { AppError, Code, type Logger } from "@poseloop/core";
import { KeypointMetricsSchema } from "@poseloop/proto/poseloop/common/v1/metrics_pb";
import { ModelKind, ModelManifestSchema, ModelRefSchema, Precision, QuantizationSummarySchema, type ModelManifest, type ModelRef } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { CocoDatasetSchema, DatasetKind, type DataSpec } from "@poseloop/proto/poseloop/common/v1/dataset_pb";
import { TrainConfigSchema } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import type { ExportModelRequest, ExportModelResponseSchema, ImportModelRequest, QuantizationReportSchema } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { datasetProblems, type DataRoots } from "../datasets/data-root.js";
import { labelProblems } from "../publication/publisher.js";
import type { ImportInit, ImportOutcome } from "./import-check.js";
import { ClaimSightings, DEFAULT_CLAIM_STALE_MS, ImportClaim, importClaimKey, LostClaimError } from "./import-claim.js";
import { checkImportInWorker } from "./import-session.js";
import { manifestYaml, parseManifestYaml } from "./manifest-yaml.js";

/** Calibration crops taken from the caller's set for int8 (the trainer's QUANT.CALIBRATION_SAMPLES default). */
const CALIBRATION_SAMPLES = 256;
/** AP points int8 may lose when the request names no bound (the trainer's QUANT.MAX_AP_DROP default). */
const DEFAULT_MAX_AP_DROP = 1;
const ARTIFACT_FILES = { [Precision.FP32]: "model.onnx", [Precision.INT8]: "model.int8.onnx" } as const;
/**
 * Labels an import writes for the sets it was measured and calibrated on: with the model's digest and its
 * manifest they say whether a later request is the same import. "poseloop" keys are refused from clients.
 */
const SET_LABELS = { calibration: "poseloop.calibration_set", validation: "poseloop.validation_set" } as const;

/** A set named by a request, as a label value (its COCO fields: the same set gives the same text). */
function setLabel(data: DataSpec | undefined): string | undefined {
  return data?.coco === undefined ? undefined : toJsonString(CocoDatasetSchema, data.coco);
}

/**
 * What a manifest YAML declares (the import, the AP gate and the registry fill in the rest), through the wire
 * format: stored floats are float32, the YAML's were doubles.
 */
function declaredPart(manifest: ModelManifest): ModelManifest {
  const { architecture, kind, input, keypointSchema, codec, outputNames, detector } = manifest;
  const part = create(ModelManifestSchema, { architecture, kind, outputNames, ...(input === undefined ? {} : { input }), ...(keypointSchema === undefined ? {} : { keypointSchema }), ...(codec === undefined ? {} : { codec }), ...(detector === undefined ? {} : { detector }) });
  return fromBinary(ModelManifestSchema, toBinary(ModelManifestSchema, part));
}

export interface ModelImporterDependencies {
  readonly registry: Pick<ModelRegistry, "publish" | "getServing" | "setServing" | "getManifest" | "getArtifact" | "listVersions">;
  readonly roots: DataRoots;
  readonly logger: Logger;
  /**
   * The claims that keep two trainers from publishing the same import twice (bucket IMPORTS_BUCKET), this
   * trainer's name in them, and after how long an unwritten claim counts as abandoned (default 30 s).
   */
  readonly claims: { readonly kv: KeyValueStore; readonly holder: string; readonly staleMs?: number };
  /** The check (and AP, int8) of an import; default: in an import worker. */
  readonly check?: (init: ImportInit, signal: AbortSignal) => Promise<ImportOutcome>;
}

export interface ImportResult {
  readonly manifest: ModelManifest;
  readonly promoted: boolean;
  /** The version that served before, when this one was promoted. */
  readonly previous?: ModelRef;
  readonly quantization?: MessageInitShape<typeof QuantizationReportSchema>;
  /** An earlier version was this import (model bytes, manifest, sets): returned, nothing published. */
  readonly alreadyImported: boolean;
}

/** A COCO set named by a request, as the dataset of a TrainConfig (people cropped by their labelled boxes). */
function setConfig(data: DataSpec): Uint8Array {
  return toBinary(TrainConfigSchema, create(TrainConfigSchema, { name: "import", data, validation: { useGtBoxes: true, flipTest: false } }));
}

/**
 * ImportModel and ExportModel: models made elsewhere published as versions like a training job's (checked as an
 * inferencer checks a load first, every problem at once, nothing published on any), and versions written back
 * out with their manifest in the YAML an import reads.
 */
export class ModelImporter {
  readonly #deps: ModelImporterDependencies;
  /** The import running now; the next waits for it. */
  #running: Promise<unknown> = Promise.resolve();
  /** How long other trainers' claims have gone unrenewed, as this trainer has seen them. */
  readonly #sightings = new ClaimSightings();

  constructor(deps: ModelImporterDependencies) {
    this.#deps = deps;
  }

  async importModel(request: ImportModelRequest, setBy: string, signal: AbortSignal): Promise<ImportResult> {
    const problems: string[] = [...modelNameProblems(request.modelName).map((p) => `model_name: ${p}`), ...labelProblems(request.labels)];
    if (request.model.byteLength === 0) problems.push("model: the ONNX file is empty");
    const parsed = parseManifestYaml(request.manifestYaml);
    problems.push(...parsed.problems.map((p) => `manifest: ${p}`));
    const sets: { what: string; data: DataSpec | undefined }[] = [
      { what: "calibration", data: request.calibration },
      { what: "validation", data: request.validation },
    ];
    for (const { what, data } of sets) {
      if (data === undefined) continue;
      if (data.kind !== DatasetKind.COCO || data.coco === undefined) problems.push(`${what}: must be a COCO-format keypoint set (kind COCO)`);
      else problems.push(...(await datasetProblems(create(TrainConfigSchema, { data }), this.#deps.roots.dataRoot)).map((p) => `${what}: ${p}`));
    }
    const detector = parsed.manifest?.kind === ModelKind.DETECTOR;
    if (request.quantize && (request.calibration === undefined || request.validation === undefined)) problems.push("quantize: int8 needs a calibration set and a validation set for its AP gate");
    if (detector && (request.quantize || request.validation !== undefined)) problems.push("quantize and validation: a detector is imported as it is (no keypoint AP to gate on)");
    if (request.minAp < 0 || request.minAp > 1) problems.push(`min_ap: ${request.minAp} is not in [0, 1]`);
    if (request.minAp > 0 && request.validation === undefined) problems.push("min_ap: needs a validation set to measure AP on");
    if (request.maxApDrop !== undefined && request.maxApDrop < 0) problems.push("max_ap_drop: must not be negative");
    if (problems.length > 0 || parsed.manifest === undefined) throw AppError.invalid("model import", problems);

    const manifest = parsed.manifest;
    // One import at a time: each takes every core onnxruntime is given, and the look-up for an earlier import
    // of the same model must see the one just before it published.
    const run = this.#running.then(() => this.#importChecked(request, manifest, setBy, signal));
    this.#running = run.catch(() => undefined);
    return run;
  }

  /**
   * The newest version of `request.modelName` that is this import: the same model bytes (the given file's
   * SHA-256), an equal manifest as its YAML declares it, int8 or not with the same bound, and the same sets.
   * Every version is looked at, not only the newest: importing A, then B, then A again finds A's version (and
   * promotes it back) rather than publishing a copy of it.
   */
  async #earlierImport(request: ImportModelRequest, manifest: ModelManifest, signal: AbortSignal): Promise<ModelManifest | undefined> {
    const { registry } = this.#deps;
    const digest = sha256Digest(request.model);
    const declared = declaredPart(manifest);
    const calibration = request.quantize ? setLabel(request.calibration) : undefined;
    const validation = setLabel(request.validation);
    const maxApDrop = Math.fround(request.maxApDrop ?? DEFAULT_MAX_AP_DROP);
    for (const version of (await registry.listVersions(request.modelName)).reverse()) {
      signal.throwIfAborted();
      const stored = await registry.getManifest(request.modelName, version, signal);
      // The file given is the fp32 artifact, or the int8 one when it came quantized; a quantization of ours
      // leaves its summary in the manifest.
      if (!stored.artifacts.some((a) => a.digest === digest)) continue;
      if ((stored.quantization !== undefined) !== request.quantize) continue;
      if (request.quantize && Math.fround(stored.quantization?.maxApDrop ?? -1) !== maxApDrop) continue;
      if (stored.labels[SET_LABELS.calibration] !== calibration || stored.labels[SET_LABELS.validation] !== validation) continue;
      if (equals(ModelManifestSchema, declaredPart(stored), declared)) return stored;
    }
    return undefined;
  }

  /** An earlier import returned again: the AP bound checked on its metrics, promoted as a new import would be. */
  async #again(request: ImportModelRequest, stored: ModelManifest, setBy: string): Promise<ImportResult> {
    const served = stored.metrics;
    if (request.minAp > 0 && served !== undefined && served.ap < request.minAp) {
      throw new AppError(Code.FAILED_PRECONDITION, `nothing imported: AP ${served.ap.toFixed(4)} on ${served.dataset} is below min_ap ${request.minAp} (measured when ${request.modelName}@${stored.model?.version ?? ""} was imported)`);
    }
    const { registry, logger } = this.#deps;
    const version = stored.model?.version ?? "";
    const serving = await registry.getServing(request.modelName);
    const promote = !request.skipPromotion && serving?.record.model?.version !== version;
    if (promote) {
      await registry.setServing(request.modelName, stored.model ?? { name: request.modelName, version }, { expectedRevision: serving?.revision ?? 0, setBy, reason: request.reason || "imported again" });
    }
    logger.info("model already imported", { model: request.modelName, version, promoted: promote });
    const previous = promote ? serving?.record.model : undefined;
    return { manifest: stored, promoted: promote, alreadyImported: true, ...(previous === undefined ? {} : { previous }) };
  }

  /**
   * This import once across the trainers: this trainer claims it (waiting while another trainer holds the
   * claim), then returns an earlier import of it or checks and publishes it. The look-up is made holding the
   * claim: a version another trainer is still publishing (its manifest written, its promotion not yet) is never
   * taken for a finished one.
   */
  async #importChecked(request: ImportModelRequest, manifest: ModelManifest, setBy: string, signal: AbortSignal): Promise<ImportResult> {
    const { claims, logger } = this.#deps;
    const key = importClaimKey(this.#identity(request, manifest));
    for (;;) {
      const claim = await ImportClaim.acquire(claims.kv, key, { holder: claims.holder, staleMs: claims.staleMs ?? DEFAULT_CLAIM_STALE_MS, sightings: this.#sightings, logger, signal });
      try {
        const earlier = await this.#earlierImport(request, manifest, signal);
        const result = earlier !== undefined ? await this.#again(request, earlier, setBy) : await this.#importNew(request, manifest, setBy, signal, () => claim.confirm());
        await claim.release("done");
        return result;
      } catch (error) {
        await claim.release("failed");
        // Taken over while this trainer stalled: the other one imports; wait for it and return its version.
        if (error instanceof LostClaimError) continue;
        throw error;
      }
    }
  }

  /** What makes two requests the same import (#earlierImport's tests), as text. */
  #identity(request: ImportModelRequest, manifest: ModelManifest): string {
    return JSON.stringify([
      request.modelName,
      sha256Digest(request.model),
      Buffer.from(toBinary(ModelManifestSchema, declaredPart(manifest))).toString("base64"),
      request.quantize,
      request.quantize ? Math.fround(request.maxApDrop ?? DEFAULT_MAX_AP_DROP) : null,
      request.quantize ? (setLabel(request.calibration) ?? null) : null,
      setLabel(request.validation) ?? null,
    ]);
  }

  async #importNew(request: ImportModelRequest, manifest: ModelManifest, setBy: string, signal: AbortSignal, beforePublish: () => Promise<void>): Promise<ImportResult> {
    manifest.model = create(ModelRefSchema, { name: request.modelName, version: "import" });
    const outcome = await (this.#deps.check ?? checkImportInWorker)(
      {
        manifest: toBinary(ModelManifestSchema, manifest),
        model: request.model,
        roots: this.#deps.roots,
        ...(request.validation === undefined ? {} : { validation: setConfig(request.validation) }),
        ...(request.quantize && request.calibration !== undefined ? { quantize: { calibration: setConfig(request.calibration), samples: CALIBRATION_SAMPLES, maxApDrop: request.maxApDrop ?? DEFAULT_MAX_AP_DROP } } : {}),
      },
      signal,
    );
    if (outcome.problems.length > 0) throw AppError.invalid(`model ${request.modelName}`, outcome.problems);
    const fp32Metrics = outcome.fp32Metrics === undefined ? undefined : fromBinary(KeypointMetricsSchema, outcome.fp32Metrics);
    const int8Metrics = outcome.int8Metrics === undefined ? undefined : fromBinary(KeypointMetricsSchema, outcome.int8Metrics);
    const gate = outcome.gate;
    const quantization = gate === undefined ? undefined : { attempts: gate.attempts, passed: gate.passed, maxApDrop: gate.maxApDrop, message: gate.message };
    if (gate !== undefined && !gate.passed) throw new AppError(Code.FAILED_PRECONDITION, `nothing imported: the int8 gate refused every attempt (${gate.message})`);
    const served = int8Metrics ?? fp32Metrics;
    if (request.minAp > 0 && served !== undefined && served.ap < request.minAp) {
      throw new AppError(Code.FAILED_PRECONDITION, `nothing imported: AP ${served.ap.toFixed(4)} on ${served.dataset} is below min_ap ${request.minAp}`);
    }
    const int8 = outcome.int8;
    // A model quantized elsewhere is stored and served as what it is, the int8 file (its AP is its own).
    const given = outcome.quantized === true ? Precision.INT8 : Precision.FP32;
    manifest.model = create(ModelRefSchema, { name: request.modelName });
    manifest.precision = int8 === undefined ? given : Precision.INT8;
    if (served !== undefined) manifest.metrics = served;
    if (fp32Metrics !== undefined && given === Precision.FP32) manifest.fp32Metrics = fp32Metrics;
    const sets = { [SET_LABELS.calibration]: request.quantize ? setLabel(request.calibration) : undefined, [SET_LABELS.validation]: setLabel(request.validation) };
    manifest.labels = { ...request.labels, imported_by: setBy, ...Object.fromEntries(Object.entries(sets).filter((entry): entry is [string, string] => entry[1] !== undefined)) };
    const accepted = gate?.attempts.find((a) => a.passed);
    if (accepted !== undefined && gate !== undefined) {
      manifest.quantization = create(QuantizationSummarySchema, { calibrator: accepted.calibrator, calibrationSamples: CALIBRATION_SAMPLES, apDrop: (accepted.fp32Ap - accepted.int8Ap) * 100, maxApDrop: gate.maxApDrop });
    }
    const promote = !request.skipPromotion;
    await beforePublish();
    const published = await this.#deps.registry.publish({
      manifest,
      files: [
        { file: ARTIFACT_FILES[given], data: request.model, precision: given },
        ...(int8 === undefined ? [] : [{ file: ARTIFACT_FILES[Precision.INT8], data: int8, precision: Precision.INT8 }]),
      ],
      servingFile: int8 === undefined ? ARTIFACT_FILES[given] : ARTIFACT_FILES[Precision.INT8],
      promote,
      setBy,
      reason: request.reason || "imported",
    });
    this.#deps.logger.info("imported a model version", { model: request.modelName, version: published.manifest.model?.version, promoted: published.serving !== undefined, precision: Precision[manifest.precision], ap: served?.ap });
    const previous = published.previous?.record.model;
    return {
      manifest: published.manifest,
      promoted: published.serving !== undefined,
      ...(previous === undefined ? {} : { previous }),
      ...(quantization === undefined ? {} : { quantization }),
      alreadyImported: false,
    };
  }

  async exportModel(request: ExportModelRequest): Promise<MessageInitShape<typeof ExportModelResponseSchema>> {
    const name = request.version?.name ?? "";
    const problems = modelNameProblems(name).map((p) => `version.name: ${p}`);
    if (request.precision === Precision.FP16) problems.push("precision: a version has fp32 and int8 files, not fp16");
    if (problems.length > 0) throw AppError.invalid("model export", problems);
    const { registry } = this.#deps;
    let version = request.version?.version ?? "";
    if (version === "") {
      version = (await registry.getServing(name))?.record.model?.version ?? "";
      if (version === "") throw new AppError(Code.NOT_FOUND, `no version of ${name} serves; name one (NAME@VERSION)`);
    }
    const manifest = await registry.getManifest(name, version);
    const wanted = request.precision === Precision.UNSPECIFIED ? undefined : request.precision;
    const artifact =
      wanted === undefined
        ? (manifest.artifacts.find((a) => a.digest === manifest.model?.digest) ?? manifest.artifacts.find((a) => a.objectName.endsWith(`/${ARTIFACT_FILES[Precision.FP32]}`)))
        : manifest.artifacts.find((a) => a.objectName.endsWith(`/${ARTIFACT_FILES[wanted as Precision.FP32 | Precision.INT8]}`));
    if (artifact === undefined) throw new AppError(Code.FAILED_PRECONDITION, `${name}@${version} has no ${wanted === Precision.INT8 ? "int8" : "served"} model file`);
    const model = await registry.getArtifact(artifact.objectName, { expectedDigest: artifact.digest });
    const header = [`${name}@${version}, ${artifact.precision === Precision.INT8 ? "int8" : "fp32"}, ${artifact.digest}`, "poseloop import MODEL.onnx --name NAME --manifest THIS_FILE reads it."].join("\n");
    return {
      version: create(ModelRefSchema, { name, version, digest: artifact.digest }),
      precision: artifact.precision,
      model,
      manifestYaml: manifestYaml(manifest, header),
    };
  }
}
