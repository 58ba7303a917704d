import { create } from "@bufbuild/protobuf";
import { keypointSchemaByName, schemaProblems, type KeypointSchema } from "@poseloop/pose";
import {
  ChannelOrder,
  CodecSchema,
  DetectorHead,
  DetectorSpecSchema,
  HeatmapRefinement,
  ModelKind,
  ModelManifestSchema,
  ResizeMode,
  type KeypointSchema as KeypointSchemaProto,
  type ModelManifest,
} from "@poseloop/proto/poseloop/common/v1/model_pb";
import { keypointSchemaProto } from "@poseloop/train";
import { Document, isScalar, isSeq, parseDocument, visit } from "yaml";

/**
 * The OKS sigma of a declared keypoint whose schema gives none: BlazePose-33's default for landmarks without a
 * published sigma (COCO's wrist sigma), so an undeclared sigma judges a keypoint like a limb end.
 */
export const DEFAULT_DECLARED_SIGMA = 0.062;

type Node = Record<string, unknown>;

const HEADS: Readonly<Record<string, DetectorHead>> = { centernet: DetectorHead.CENTERNET, yolox: DetectorHead.YOLOX, rtmdet: DetectorHead.RTMDET, "boxes-scores": DetectorHead.BOXES_SCORES };
const REFINEMENTS: Readonly<Record<string, HeatmapRefinement>> = { none: HeatmapRefinement.NONE, "quarter-offset": HeatmapRefinement.QUARTER_OFFSET, dark: HeatmapRefinement.DARK };
const RESIZES: Readonly<Record<string, ResizeMode>> = { letterbox: ResizeMode.LETTERBOX, stretch: ResizeMode.STRETCH };
const nameOf = <T>(table: Readonly<Record<string, T>>, value: T): string | undefined => Object.entries(table).find(([, v]) => v === value)?.[0];

/** Reads one mapping's keys, recording every problem under its path; an unknown key is a problem, never ignored. */
class Reader {
  readonly problems: string[] = [];

  mapping(value: unknown, path: string, keys: readonly string[]): Node | undefined {
    if (value === undefined || value === null) return undefined;
    if (typeof value !== "object" || Array.isArray(value)) {
      this.problems.push(`${path}: must be a mapping`);
      return undefined;
    }
    for (const key of Object.keys(value)) if (!keys.includes(key)) this.problems.push(`${path === "" ? "" : `${path}.`}${key}: unknown key (known: ${keys.join(", ")})`);
    return value as Node;
  }

  string(node: Node | undefined, key: string, path: string, fallback?: string): string | undefined {
    const value = node?.[key];
    if (value === undefined || value === null) {
      if (fallback === undefined) this.problems.push(`${path}${key}: required`);
      return fallback;
    }
    if (typeof value !== "string" || value.trim() === "") {
      this.problems.push(`${path}${key}: must be a non-empty string`);
      return fallback;
    }
    return value.trim();
  }

  number(node: Node | undefined, key: string, path: string, options: { fallback?: number; min?: number; integer?: boolean; positive?: boolean }): number {
    const value = node?.[key];
    if (value === undefined || value === null) {
      if (options.fallback === undefined) this.problems.push(`${path}${key}: required`);
      return options.fallback ?? 0;
    }
    const ok = typeof value === "number" && Number.isFinite(value) && (options.integer !== true || Number.isInteger(value)) && (options.min === undefined || value >= options.min) && (options.positive !== true || value > 0);
    if (!ok) {
      this.problems.push(`${path}${key}: must be ${options.positive === true ? "a positive" : options.min !== undefined ? `a ${options.min} or larger` : "a"} ${options.integer === true ? "integer" : "number"}, got ${JSON.stringify(value)}`);
      return options.fallback ?? 0;
    }
    return value;
  }

  boolean(node: Node | undefined, key: string, path: string): boolean {
    const value = node?.[key];
    if (value === undefined || value === null) return false;
    if (typeof value !== "boolean") this.problems.push(`${path}${key}: must be true or false`);
    return value === true;
  }

  numbers(node: Node | undefined, key: string, path: string, length?: number): number[] | undefined {
    const value = node?.[key];
    if (value === undefined || value === null) return undefined;
    if (!Array.isArray(value) || !value.every((v) => typeof v === "number" && Number.isFinite(v)) || (length !== undefined && value.length !== length)) {
      this.problems.push(`${path}${key}: must be a list of ${length ?? "some"} numbers`);
      return undefined;
    }
    return value as number[];
  }

  strings(node: Node | undefined, key: string, path: string): string[] | undefined {
    const value = node?.[key];
    if (value === undefined || value === null) return undefined;
    if (!Array.isArray(value) || !value.every((v) => typeof v === "string" && v !== "")) {
      this.problems.push(`${path}${key}: must be a list of names`);
      return undefined;
    }
    return value as string[];
  }

  pairs(node: Node | undefined, key: string, path: string): [number, number][] {
    const value = node?.[key];
    if (value === undefined || value === null) return [];
    const ok = Array.isArray(value) && value.every((p) => Array.isArray(p) && p.length === 2 && p.every((i) => Number.isInteger(i) && (i as number) >= 0));
    if (!ok) {
      this.problems.push(`${path}${key}: must be a list of [index, index] pairs`);
      return [];
    }
    return value as [number, number][];
  }

  choice<T>(node: Node | undefined, key: string, path: string, table: Readonly<Record<string, T>>, fallback: string): T {
    const raw = node?.[key] ?? fallback;
    const value = typeof raw === "string" ? table[raw.toLowerCase()] : undefined;
    if (value === undefined) this.problems.push(`${path}${key}: must be one of ${Object.keys(table).join(", ")}, got ${JSON.stringify(raw)}`);
    return value ?? (table[fallback] as T);
  }
}

/** A schema declared inline (names, skeleton, flip pairs, sigmas), or a known one by name. */
function readSchema(reader: Reader, value: unknown): KeypointSchema | undefined {
  if (typeof value === "string") {
    const known = keypointSchemaByName(value.trim());
    if (known === undefined) reader.problems.push(`keypoints: "${value}" is not a schema PoseLoop knows (coco-17, blazepose-33, coco-wholebody-133); declare it with names, skeleton, flip_pairs and sigmas`);
    return known;
  }
  const node = reader.mapping(value, "keypoints", ["name", "names", "skeleton", "flip_pairs", "sigmas"]);
  if (node === undefined) {
    reader.problems.push("keypoints: required (a schema's name, or a mapping declaring it)");
    return undefined;
  }
  const names = reader.strings(node, "names", "keypoints.");
  if (names === undefined) {
    reader.problems.push("keypoints.names: required");
    return undefined;
  }
  const schema: KeypointSchema = {
    name: reader.string(node, "name", "keypoints.", "custom") ?? "custom",
    names,
    skeleton: reader.pairs(node, "skeleton", "keypoints."),
    flipPairs: reader.pairs(node, "flip_pairs", "keypoints."),
    sigmas: reader.numbers(node, "sigmas", "keypoints.") ?? names.map(() => DEFAULT_DECLARED_SIGMA),
  };
  for (const problem of schemaProblems(schema)) reader.problems.push(`keypoints: ${problem}`);
  return schema;
}

/**
 * The manifest a model's YAML describes (README, "Bring your own model"), or every problem with it. The result
 * names no model or version: the import assigns them.
 */
export function parseManifestYaml(text: string): { manifest?: ModelManifest; problems: string[] } {
  const document = parseDocument(text, { uniqueKeys: true });
  if (document.errors.length > 0) return { problems: document.errors.map((error) => `manifest YAML: ${error.message.split("\n")[0] ?? ""}`) };
  const reader = new Reader();
  const root = reader.mapping(document.toJS() as unknown, "", ["kind", "architecture", "input", "keypoints", "codec", "outputs", "detector"]);
  if (root === undefined) return { problems: ["the manifest must be a YAML mapping"] };
  const kind = reader.choice(root, "kind", "", { pose: ModelKind.POSE, detector: ModelKind.DETECTOR }, "pose");
  const input = reader.mapping(root["input"], "input", ["name", "width", "height", "channel_order", "mean", "std", "max_batch"]);
  if (input === undefined) reader.problems.push("input: required (name, width, height, channel_order, mean, std)");
  const manifest = create(ModelManifestSchema, {
    architecture: reader.string(root, "architecture", "", "foreign") ?? "foreign",
    kind,
    input: {
      name: reader.string(input, "name", "input.", "input") ?? "input",
      width: reader.number(input, "width", "input.", { integer: true, positive: true }),
      height: reader.number(input, "height", "input.", { integer: true, positive: true }),
      channelOrder: reader.choice(input, "channel_order", "input.", { rgb: ChannelOrder.RGB, bgr: ChannelOrder.BGR }, "rgb"),
      mean: reader.numbers(input, "mean", "input.", 3) ?? [0, 0, 0],
      std: reader.numbers(input, "std", "input.", 3) ?? [1, 1, 1],
      maxBatch: reader.number(input, "max_batch", "input.", { fallback: 0, integer: true, min: 0 }),
    },
  });
  if ((manifest.input?.std ?? []).some((s) => !(s > 0))) reader.problems.push("input.std: every value must be positive");
  if (kind === ModelKind.DETECTOR) {
    for (const key of ["keypoints", "codec", "outputs"]) if (root[key] !== undefined) reader.problems.push(`${key}: a detector has no ${key} (its outputs are named under detector.output_names)`);
    const node = reader.mapping(root["detector"], "detector", ["head", "num_classes", "person_class", "strides", "resize", "pad_value", "score_threshold", "iou_threshold", "max_detections", "output_names"]);
    if (node === undefined) reader.problems.push("detector: required for kind detector (head, num_classes, person_class, strides, ...)");
    const numClasses = reader.number(node, "num_classes", "detector.", { fallback: 1, integer: true, positive: true });
    const personClass = reader.number(node, "person_class", "detector.", { fallback: 0, integer: true, min: 0 });
    if (personClass >= numClasses) reader.problems.push(`detector.person_class: ${personClass} is not below num_classes ${numClasses}`);
    manifest.detector = create(DetectorSpecSchema, {
      head: reader.choice(node, "head", "detector.", HEADS, "centernet"),
      numClasses,
      personClass,
      strides: reader.numbers(node, "strides", "detector.") ?? [],
      resize: reader.choice(node, "resize", "detector.", RESIZES, "letterbox"),
      padValue: reader.number(node, "pad_value", "detector.", { fallback: 0 }),
      scoreThreshold: reader.number(node, "score_threshold", "detector.", { fallback: 0, min: 0 }),
      iouThreshold: reader.number(node, "iou_threshold", "detector.", { fallback: 0, min: 0 }),
      maxDetections: reader.number(node, "max_detections", "detector.", { fallback: 0, integer: true, min: 0 }),
      outputNames: reader.strings(node, "output_names", "detector.") ?? [],
    });
    if (manifest.detector.strides.some((s) => !Number.isInteger(s) || s <= 0)) reader.problems.push("detector.strides: must be positive integers");
    return reader.problems.length > 0 ? { problems: reader.problems } : { manifest, problems: [] };
  }
  if (root["detector"] !== undefined) reader.problems.push("detector: only a model of kind detector has one");
  const schema = readSchema(reader, root["keypoints"]);
  if (schema !== undefined) manifest.keypointSchema = keypointSchemaProto(schema);
  const codec = reader.mapping(root["codec"], "codec", ["type", "width", "height", "sigma", "refinement", "unbiased", "split_ratio", "sigma_x", "sigma_y", "label_smoothing", "normalize"]);
  if (codec === undefined) reader.problems.push("codec: required (type heatmap or simcc, with its parameters)");
  const type = reader.choice(codec, "type", "codec.", { heatmap: "heatmap", simcc: "simcc" } as const, "heatmap");
  if (type === "heatmap") {
    for (const key of ["split_ratio", "sigma_x", "sigma_y", "label_smoothing", "normalize"]) if (codec?.[key] !== undefined) reader.problems.push(`codec.${key}: a SimCC parameter, not a heatmap one`);
    manifest.codec = create(CodecSchema, {
      kind: {
        case: "heatmap",
        value: {
          width: reader.number(codec, "width", "codec.", { integer: true, positive: true }),
          height: reader.number(codec, "height", "codec.", { integer: true, positive: true }),
          sigma: reader.number(codec, "sigma", "codec.", { fallback: 2, positive: true }),
          refinement: reader.choice(codec, "refinement", "codec.", REFINEMENTS, "quarter-offset"),
          unbiased: reader.boolean(codec, "unbiased", "codec."),
        },
      },
    });
  } else {
    for (const key of ["width", "height", "sigma", "refinement", "unbiased"]) if (codec?.[key] !== undefined) reader.problems.push(`codec.${key}: a heatmap parameter, not a SimCC one`);
    manifest.codec = create(CodecSchema, {
      kind: {
        case: "simcc",
        value: {
          splitRatio: reader.number(codec, "split_ratio", "codec.", { fallback: 2, positive: true }),
          sigmaX: reader.number(codec, "sigma_x", "codec.", { fallback: 0, min: 0 }),
          sigmaY: reader.number(codec, "sigma_y", "codec.", { fallback: 0, min: 0 }),
          labelSmoothing: reader.number(codec, "label_smoothing", "codec.", { fallback: 0, min: 0 }),
          normalize: reader.boolean(codec, "normalize", "codec."),
        },
      },
    });
  }
  const outputs = reader.strings(root, "outputs", "");
  const expected = type === "heatmap" ? 1 : 2;
  if (outputs === undefined) reader.problems.push(`outputs: required (the ONNX output names in the codec's order: ${type === "heatmap" ? "[heatmaps]" : "[simcc_x, simcc_y]"})`);
  else if (outputs.length !== expected) reader.problems.push(`outputs: a ${type} model has ${expected} output${expected === 1 ? "" : "s"}, the manifest names ${outputs.length}`);
  manifest.outputNames = outputs ?? [];
  return reader.problems.length > 0 ? { problems: reader.problems } : { manifest, problems: [] };
}

const rounded = (values: readonly number[]): number[] => values.map((v) => Number(v.toPrecision(7)));

function schemaYaml(schema: KeypointSchemaProto): unknown {
  const known = keypointSchemaByName(schema.name);
  const pairs = (list: readonly { fromIndex?: number; toIndex?: number; leftIndex?: number; rightIndex?: number }[]) => list.map((p) => [p.fromIndex ?? p.leftIndex ?? 0, p.toIndex ?? p.rightIndex ?? 0]);
  const declared = {
    name: schema.name,
    names: [...schema.keypointNames],
    skeleton: pairs(schema.skeleton),
    flip_pairs: pairs(schema.flipPairs),
    sigmas: rounded(schema.oksSigmas),
  };
  // A known schema goes by its name only when the manifest's is exactly it.
  const same = known !== undefined && JSON.stringify(declared) === JSON.stringify({ name: known.name, names: [...known.names], skeleton: known.skeleton.map(([a, b]) => [a, b]), flip_pairs: known.flipPairs.map(([a, b]) => [a, b]), sigmas: rounded(known.sigmas) });
  return same ? schema.name : declared;
}

/** The YAML of a manifest, in the format parseManifestYaml reads; `header` becomes its leading comment. */
export function manifestYaml(manifest: ModelManifest, header: string): string {
  const input = manifest.input;
  const doc: Record<string, unknown> = {
    kind: manifest.kind === ModelKind.DETECTOR ? "detector" : "pose",
    architecture: manifest.architecture || "foreign",
    input: {
      name: input?.name ?? "input",
      width: input?.width ?? 0,
      height: input?.height ?? 0,
      channel_order: input?.channelOrder === ChannelOrder.BGR ? "bgr" : "rgb",
      mean: rounded(input?.mean ?? []),
      std: rounded(input?.std ?? []),
      ...(input !== undefined && input.maxBatch > 0 ? { max_batch: input.maxBatch } : {}),
    },
  };
  if (manifest.kind === ModelKind.DETECTOR) {
    const d = manifest.detector;
    doc["detector"] = {
      head: nameOf(HEADS, d?.head ?? DetectorHead.UNSPECIFIED) ?? "centernet",
      num_classes: d?.numClasses ?? 1,
      person_class: d?.personClass ?? 0,
      strides: [...(d?.strides ?? [])],
      resize: nameOf(RESIZES, d?.resize ?? ResizeMode.UNSPECIFIED) ?? "letterbox",
      pad_value: d?.padValue ?? 0,
      score_threshold: Number((d?.scoreThreshold ?? 0).toPrecision(7)),
      iou_threshold: Number((d?.iouThreshold ?? 0).toPrecision(7)),
      max_detections: d?.maxDetections ?? 0,
      ...(d !== undefined && d.outputNames.length > 0 ? { output_names: [...d.outputNames] } : {}),
    };
  } else {
    if (manifest.keypointSchema !== undefined) doc["keypoints"] = schemaYaml(manifest.keypointSchema);
    const codec = manifest.codec?.kind;
    if (codec?.case === "heatmap") {
      const h = codec.value;
      doc["codec"] = { type: "heatmap", width: h.width, height: h.height, sigma: Number(h.sigma.toPrecision(7)), refinement: nameOf(REFINEMENTS, h.refinement) ?? "quarter-offset", unbiased: h.unbiased };
    } else if (codec?.case === "simcc") {
      const s = codec.value;
      doc["codec"] = { type: "simcc", split_ratio: Number(s.splitRatio.toPrecision(7)), sigma_x: Number(s.sigmaX.toPrecision(7)), sigma_y: Number(s.sigmaY.toPrecision(7)), label_smoothing: Number(s.labelSmoothing.toPrecision(7)), normalize: s.normalize };
    }
    doc["outputs"] = [...manifest.outputNames];
  }
  const comment = header.split("\n").map((line) => `# ${line}`).join("\n");
  // Lists of numbers or names on one line each ([0, 1]), the mappings in block style.
  const document = new Document(doc);
  visit(document, {
    Seq(_, node) {
      if (node.items.every((item) => isScalar(item) || (isSeq(item) && item.items.every(isScalar)))) node.flow = true;
    },
  });
  return `${comment}\n${document.toString({ lineWidth: 120 })}`;
}
