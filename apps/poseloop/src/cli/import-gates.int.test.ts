import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { TrainerClient } from "@poseloop/client";
import { AppError, Code, silentLogger } from "@poseloop/core";
import { ModelRegistry, openBus, type Bus } from "@poseloop/bus";
import { encodeModel, GraphBuilder, hostTensor, ints } from "@poseloop/onnx";
import { COCO17 } from "@poseloop/pose";
import { Precision } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { makeTempDir, NatsServer } from "@poseloop/testkit";
import { loadConfig as loadTrainerConfig, startTrainer, type TrainerProcess } from "@poseloop/trainer";
import { encodePng } from "@poseloop/vision";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliRunner } from "../testing/cli-runner.js";

// `poseloop import`'s gates and its detector path, end to end against a real trainer over gRPC on a real
// nats-server: int8 published only when it passes the AP gate, --min-ap refusing and accepting, detectors checked
// against their manifest, and an import repeated with the same bytes, manifest and sets publishing nothing.
//
// The pose models have known AP without any training: each picture of the sets is one person in one of two
// poses, told apart by the picture's brightness, and a hand-built ONNX net reads the brightness and answers with
// that pose's heatmap peaks (AP 1), or the other pose's (AP 0).

const DETECTOR_DIR = fileURLToPath(new URL("../../../../models/person-detector/", import.meta.url));
const K = 17;
const [W, H, HW, HH] = [48, 64, 12, 16];
/** A box whose padded crop region (x1.25) is the whole 48x64 picture: crop pixels are picture pixels. */
const BOX = [4.8, 6.4, 38.4, 51.2] as const;
/** The two poses' keypoints, on heatmap cells (stride 4), every keypoint of one far from the other's. */
const POSES = {
  bright: Array.from({ length: K }, (_, k) => [1 + (k % 4), 1 + Math.floor(k / 4)] as const),
  dark: Array.from({ length: K }, (_, k) => [7 + (k % 4), 10 + Math.floor(k / 4)] as const),
};
const PIXEL = { bright: 200, dark: 50 } as const;

/** One-hot heatmaps of a pose: [1, K, HH, HW]. */
function peaks(pose: readonly (readonly [number, number])[]): Float32Array {
  const maps = new Float32Array(K * HH * HW);
  pose.forEach(([x, y], k) => (maps[(k * HH + y) * HW + x] = 1));
  return maps;
}

/**
 * image → 1x1 conv (channel 0: the mean of R, G, B; channel 1: `spread`, a constant) → global average → s·10 →
 * sigmoid σ → heatmaps dark + σ·(bright − dark) (swapped: the other way round). A large `spread` stretches
 * the conv output's int8 range until the brightness (about ±1.5 after normalization) rounds to 0 and σ to ½:
 * int8 loses every picture of one of the poses, whatever the calibrator, while fp32 still sees all of them.
 */
function oracleModel(options: { swap?: boolean; spread?: number } = {}): Uint8Array {
  const g = new GraphBuilder({ name: "oracle" });
  const x = g.input("image", "float32", ["n", 3, H, W]);
  const third = 1 / 3;
  const w1 = g.initializer("w1", hostTensor("float32", [2, 3, 1, 1], [third, third, third, 0, 0, 0]));
  const b1 = g.initializer("b1", hostTensor("float32", [2], [0, options.spread ?? 0]));
  const pooled = g.op("GlobalAveragePool", [g.op("Conv", [x, w1, b1], { kernel_shape: ints([1, 1]) })]);
  const w2 = g.initializer("w2", hostTensor("float32", [1, 2, 1, 1], [10, 0]));
  const b2 = g.initializer("b2", hostTensor("float32", [1], [0]));
  const sigma = g.op("Sigmoid", [g.op("Conv", [pooled, w2, b2], { kernel_shape: ints([1, 1]) })]);
  const [to, from] = options.swap === true ? [POSES.dark, POSES.bright] : [POSES.bright, POSES.dark];
  const base = peaks(from);
  const towards = peaks(to).map((v, i) => v - (base[i] ?? 0));
  const scaled = g.op("Mul", [sigma, g.initializer("towards", hostTensor("float32", [1, K, HH, HW], towards))]);
  const heatmaps = g.op("Add", [scaled, g.initializer("base", hostTensor("float32", [1, K, HH, HW], base))], {}, { shape: ["n", K, HH, HW] });
  g.output(heatmaps, "heatmaps");
  return encodeModel(g.build());
}

const POSE_MANIFEST = [
  "kind: pose",
  "architecture: oracle",
  "input:",
  "  name: image",
  `  width: ${W}`,
  `  height: ${H}`,
  "  channel_order: rgb",
  "  mean: [123.675, 116.28, 103.53]",
  "  std: [58.395, 57.12, 57.375]",
  "keypoints: coco-17",
  "codec:",
  "  type: heatmap",
  `  width: ${HW}`,
  `  height: ${HH}`,
  "  sigma: 2",
  "  refinement: none",
  "outputs: [heatmaps]",
  "",
].join("\n");

/** A COCO keypoint set under the data root: `pictures` uniform pictures, alternately bright and dark. */
async function writeSet(dataRoot: string, split: string, pictures: number): Promise<string> {
  await mkdir(join(dataRoot, "gates", split), { recursive: true });
  await mkdir(join(dataRoot, "gates", "annotations"), { recursive: true });
  const images = [];
  const annotations = [];
  for (let i = 0; i < pictures; i++) {
    const kind = i % 2 === 0 ? "bright" : "dark";
    const file = `${String(i).padStart(4, "0")}.png`;
    await writeFile(join(dataRoot, "gates", split, file), await encodePng({ width: W, height: H, data: new Uint8Array(W * H * 3).fill(PIXEL[kind]) }));
    images.push({ id: i + 1, file_name: file, width: W, height: H });
    annotations.push({
      id: i + 1,
      image_id: i + 1,
      category_id: 1,
      bbox: [...BOX],
      area: BOX[2] * BOX[3],
      iscrowd: 0,
      num_keypoints: K,
      keypoints: POSES[kind].flatMap(([cx, cy]) => [cx * 4, cy * 4, 2]),
    });
  }
  const categories = [{ id: 1, name: "person", supercategory: "person", keypoints: [...COCO17.names], skeleton: COCO17.skeleton.map(([a, b]) => [a + 1, b + 1]) }];
  const annotationsFile = join("gates", "annotations", `person_keypoints_${split}.json`);
  await writeFile(join(dataRoot, annotationsFile), JSON.stringify({ images, annotations, categories }));
  return annotationsFile;
}

let nats: NatsServer;
let dir: { path: string; remove: () => Promise<void> };
let trainer: TrainerProcess;
let bus: Bus;
let registry: ModelRegistry;
let trainerClient: TrainerClient;
const sets = { calibration: "", validation: "", other: "" };
let env: Record<string, string> = {};
const { cli, cliJson } = cliRunner(() => ({ env, cwd: dir.path }));
const named = (what: string): string => `${what}-${process.pid}`;

interface ImportJson {
  manifest: { model: { name: string; version: string; digest: string }; precision: string; kind?: string; metrics?: { ap: number }; labels?: Record<string, string> };
  promoted?: boolean;
  alreadyImported?: boolean;
  quantization?: { passed?: boolean; maxApDrop?: number; message: string; attempts: { strategy: string; int8Ap?: number }[] };
}

/** Nothing of `name` was published: the trainer has no version of it to export. */
async function expectNothingPublished(name: string): Promise<void> {
  const error = await trainerClient.exportModel(name).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(AppError);
  expect((error as AppError).code).toBe(Code.NOT_FOUND);
  expect(await registry.listVersions(name)).toEqual([]);
}

beforeAll(async () => {
  dir = await makeTempDir("poseloop-import-gates-");
  const dataRoot = join(dir.path, "data");
  nats = await NatsServer.start();
  trainer = await startTrainer(
    loadTrainerConfig({ POSELOOP_NATS_URL: nats.url, POSELOOP_LOG_LEVEL: "error", POSELOOP_TRAINER_LISTEN: "127.0.0.1:0", POSELOOP_DATA_ROOT: dataRoot, POSELOOP_WORK_DIR: join(dir.path, "work"), POSELOOP_MAX_CONCURRENT_JOBS: "0", POSELOOP_PYTHON: "/bin/false" }),
    silentLogger,
  );
  [sets.calibration, sets.validation, sets.other] = await Promise.all([writeSet(dataRoot, "calib", 4), writeSet(dataRoot, "val", 4), writeSet(dataRoot, "other", 6)]);
  await Promise.all([
    writeFile(join(dir.path, "oracle.onnx"), oracleModel()),
    writeFile(join(dir.path, "swapped.onnx"), oracleModel({ swap: true })),
    writeFile(join(dir.path, "fragile.onnx"), oracleModel({ spread: 1000 })),
    writeFile(join(dir.path, "pose.yaml"), POSE_MANIFEST),
  ]);
  bus = await openBus({ natsServers: [nats.url], embeddedDir: "" });
  registry = await ModelRegistry.open(bus, silentLogger);
  env = { POSELOOP_TRAINER_ADDR: `127.0.0.1:${trainer.address.port}` };
  trainerClient = new TrainerClient({ address: env["POSELOOP_TRAINER_ADDR"] as string });
}, 60_000);

afterAll(async () => {
  trainerClient?.close();
  await bus?.close();
  await trainer?.stop();
  await nats?.dispose();
  await dir?.remove();
});

describe("poseloop import --quantize", () => {
  it("publishes the int8 model when it keeps the fp32 model's AP, and says what the gate measured", async () => {
    const name = named("int8");
    const args = ["import", "oracle.onnx", "--name", name, "--manifest", "pose.yaml", "--quantize", "--calibration-set", sets.calibration, "--val-set", sets.validation, "--max-ap-drop", "0"];
    const imported = await cliJson<ImportJson>([...args, "--json"]);
    // "No loss at all" is a bound of its own, not the default 1.0 (JSON leaves a 0 out).
    expect(imported.quantization?.maxApDrop ?? 0).toBe(0);
    expect(imported.manifest.precision).toBe("PRECISION_INT8");
    expect(imported.manifest.metrics?.ap).toBeCloseTo(1, 5);
    expect(imported.quantization?.passed).toBe(true);
    expect(imported.quantization?.message).toMatch(/^all-int8 loses 0\.00 AP points$/);
    const exported = await trainerClient.exportModel(name, { precision: "int8" });
    expect(exported.version?.digest).toBe(imported.manifest.model.digest);

    // That int8 file imported by itself is an int8 model: quantizing it again is refused, and without
    // --quantize it is stored and served as int8, its AP its own.
    await writeFile(join(dir.path, "oracle.int8.onnx"), exported.model);
    const requantized = await cli(["import", "oracle.int8.onnx", "--name", named("int8-again"), "--manifest", "pose.yaml", "--quantize", "--calibration-set", sets.calibration, "--val-set", sets.validation]);
    expect(requantized.code).not.toBe(0);
    expect(requantized.stderr).toMatch(/the model is int8 already \(.*x\d+.*\): import it without --quantize/);
    await expectNothingPublished(named("int8-again"));
    const asIs = await cliJson<ImportJson>(["import", "oracle.int8.onnx", "--name", named("int8-as-is"), "--manifest", "pose.yaml", "--ap-gate", "--val-set", sets.validation, "--json"]);
    expect(asIs.manifest.precision).toBe("PRECISION_INT8");
    expect(asIs.manifest.metrics?.ap).toBeCloseTo(1, 5);
  });

  it("publishes nothing when every int8 attempt loses more AP than allowed, and lists each attempt's", async () => {
    const name = named("fragile");
    const fp32 = await cliJson<ImportJson>(["import", "fragile.onnx", "--name", `${name}-fp32`, "--manifest", "pose.yaml", "--ap-gate", "--val-set", sets.validation, "--json"]);
    // fp32 tells the poses apart; int8 rounds the brightness away and takes every picture for one pose.
    expect(fp32.manifest.metrics?.ap).toBeCloseTo(1, 5);
    const { code, stderr } = await cli(["import", "fragile.onnx", "--name", name, "--manifest", "pose.yaml", "--quantize", "--calibration-set", sets.calibration, "--val-set", sets.validation]);
    expect(code).not.toBe(0);
    expect(stderr).toMatch(/nothing imported: the int8 gate refused every attempt \(no int8 model within 1 AP points of fp32 \(AP 100\.0\); the best, \S+, lost \d+\.\d\d\)/);
    const lost = Number(/lost (\d+\.\d\d)/.exec(stderr)?.[1]);
    expect(lost).toBeGreaterThan(25);
    await expectNothingPublished(name);
  });
});

describe("poseloop import --ap-gate --min-ap", () => {
  it("refuses a model below the bar, naming the AP it measured and the bar", async () => {
    const name = named("below");
    const { code, stderr } = await cli(["import", "swapped.onnx", "--name", name, "--manifest", "pose.yaml", "--ap-gate", "--val-set", sets.validation, "--min-ap", "0.5"]);
    expect(code).not.toBe(0);
    expect(stderr).toMatch(/nothing imported: AP 0\.0000 on \S+ is below min_ap 0\.5/);
    await expectNothingPublished(name);
  });

  it("accepts a model above the bar and keeps the AP it measured in the manifest", async () => {
    const name = named("above");
    const { code, stdout, stderr } = await cli(["import", "oracle.onnx", "--name", name, "--manifest", "pose.yaml", "--ap-gate", "--val-set", sets.validation, "--min-ap", "0.9"]);
    expect(code, stderr).toBe(0);
    expect(stdout).toMatch(new RegExp(`^imported ${name}@\\S+ \\(fp32, oracle, AP 1\\.000?\\), 17 keypoints \\(coco-17\\): serving now`));
  });
});

describe("poseloop import of a detector", () => {
  const detectorManifest = async (): Promise<string> => readFile(join(DETECTOR_DIR, "manifest.yaml"), "utf8");

  it("checks a detector against its manifest and publishes it as a detector version", async () => {
    const name = named("detector");
    const imported = await cliJson<ImportJson>(["import", join(DETECTOR_DIR, "model.int8.onnx"), "--name", name, "--manifest", join(DETECTOR_DIR, "manifest.yaml"), "--json"]);
    expect(imported.manifest.kind).toBe("MODEL_KIND_DETECTOR");
    // The shipped file is quantized already: it is stored and served as the int8 model it is.
    expect(imported.manifest.precision).toBe("PRECISION_INT8");
    expect(imported.promoted).toBe(true);
    const exported = await trainerClient.exportModel(name);
    expect(exported.precision).toBe(Precision.INT8);
    expect(exported.manifestYaml).toMatch(/^kind: detector$/m);
    expect(new Uint8Array(exported.model)).toEqual(new Uint8Array(await readFile(join(DETECTOR_DIR, "model.int8.onnx"))));
  });

  it("lists every output and input a detector's manifest names that its model lacks, and publishes nothing", async () => {
    const name = named("bad-detector");
    const wrongNames = (await detectorManifest()).replace("  name: input", "  name: pixels").replace("output_names: [ centers, sizes, offsets ]", "output_names: [ heat, sizes, wh ]");
    await writeFile(join(dir.path, "wrong-names.yaml"), wrongNames);
    const names = await cli(["import", join(DETECTOR_DIR, "model.int8.onnx"), "--name", name, "--manifest", "wrong-names.yaml"]);
    expect(names.code).not.toBe(0);
    expect(names.stderr).toMatch(/\(3 problems\)/);
    for (const problem of [/no input named pixels \(its inputs: input\)/, /no output named heat \(its outputs: centers, sizes, offsets\)/, /no output named wh/]) expect(names.stderr).toMatch(problem);

    // A CenterNet manifest (its outputs by the head's layout) on a pose model: none of the three outputs is there.
    const centernet = (await detectorManifest()).replace("  name: input", "  name: image").replace("  width: 128", `  width: ${W}`).replace("  height: 96", `  height: ${H}`).replace(/^ {2}output_names:.*\n/m, "");
    await writeFile(join(dir.path, "centernet.yaml"), centernet);
    const pose = await cli(["import", "oracle.onnx", "--name", name, "--manifest", "centernet.yaml"]);
    expect(pose.code).not.toBe(0);
    expect(pose.stderr).toMatch(/\(3 problems\)/);
    for (const output of ["centers", "sizes", "offsets"]) expect(pose.stderr).toMatch(new RegExp(`no output named ${output} \\(its outputs: heatmaps\\)`));

    const measured = await cli(["import", join(DETECTOR_DIR, "model.int8.onnx"), "--name", name, "--manifest", join(DETECTOR_DIR, "manifest.yaml"), "--ap-gate", "--val-set", sets.validation]);
    expect(measured.code).not.toBe(0);
    expect(measured.stderr).toMatch(/a detector is imported as it is/);
    await expectNothingPublished(name);
  });
});

describe("poseloop import, again", () => {
  const detector = (name: string, manifest = join(DETECTOR_DIR, "manifest.yaml"), ...more: string[]) => ["import", join(DETECTOR_DIR, "model.int8.onnx"), "--name", name, "--manifest", manifest, ...more];

  it("names the version an earlier import of the same bytes and manifest made, and publishes nothing", async () => {
    const name = named("again");
    const first = await cliJson<ImportJson>([...detector(name), "--json"]);
    expect(first.alreadyImported ?? false).toBe(false);
    const again = await cli(detector(name));
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(new RegExp(`^already imported as ${name}@${first.manifest.model.version} \\(int8, detector-lite\\) \\(the same model bytes, manifest and sets\\): nothing published, serving already`));
    const json = await cliJson<ImportJson>([...detector(name), "--json"]);
    expect(json.alreadyImported).toBe(true);
    expect(json.promoted ?? false).toBe(false);
    expect(json.manifest.model).toEqual(first.manifest.model);
    expect(await registry.listVersions(name)).toEqual([first.manifest.model.version]);

    // The same YAML written differently (comments, spacing, a default spelled out) is the same manifest.
    const restyled = (await readFile(join(DETECTOR_DIR, "manifest.yaml"), "utf8")).replace(/^#.*\n/gm, "").replace("[ 4 ]", "[4]").replace("kind: detector", "kind: detector\n# a comment");
    await writeFile(join(dir.path, "restyled.yaml"), restyled);
    expect((await cliJson<ImportJson>([...detector(name, "restyled.yaml"), "--json"])).alreadyImported).toBe(true);
    expect(await registry.listVersions(name)).toHaveLength(1);
  });

  it("publishes a new version when the manifest differs, and promotes an earlier import back when imported again", async () => {
    const name = named("changed");
    const a = await cliJson<ImportJson>([...detector(name), "--json"]);
    await writeFile(join(dir.path, "threshold.yaml"), (await readFile(join(DETECTOR_DIR, "manifest.yaml"), "utf8")).replace("score_threshold: 0.3", "score_threshold: 0.4"));
    const b = await cliJson<ImportJson>([...detector(name, "threshold.yaml"), "--json"]);
    expect(b.alreadyImported ?? false).toBe(false);
    expect(b.manifest.model.version).not.toBe(a.manifest.model.version);
    expect((await registry.getServing(name))?.record.model?.version).toBe(b.manifest.model.version);

    // --skip-promotion: named, left as it is.
    const skipped = await cli([...detector(name), "--skip-promotion"]);
    expect(skipped.stdout).toMatch(new RegExp(`^already imported as ${name}@${a.manifest.model.version} .*: nothing published, not promoted \\(--skip-promotion\\)`));
    expect((await registry.getServing(name))?.record.model?.version).toBe(b.manifest.model.version);

    // A again: its own version serves again, as a new import would have served.
    const back = await cli(detector(name));
    expect(back.stdout).toMatch(new RegExp(`^already imported as ${name}@${a.manifest.model.version} .*: nothing published, serving now`));
    expect((await registry.getServing(name))?.record.model?.version).toBe(a.manifest.model.version);
    expect(await registry.listVersions(name)).toHaveLength(2);
  });

  it("measures again on another set, and holds an earlier import's AP to a new --min-ap", async () => {
    const name = named("measured");
    const gate = (set: string, ...more: string[]) => ["import", "oracle.onnx", "--name", name, "--manifest", "pose.yaml", "--ap-gate", "--val-set", set, ...more, "--json"];
    const first = await cliJson<ImportJson>(gate(sets.validation));
    expect((await cliJson<ImportJson>(gate(sets.validation, "--min-ap", "0.9"))).alreadyImported).toBe(true);
    const other = await cliJson<ImportJson>(gate(sets.other));
    expect(other.alreadyImported ?? false).toBe(false);
    expect(other.manifest.model.version).not.toBe(first.manifest.model.version);
    // Without a set: no AP was asked for, a third import.
    const plain = await cliJson<ImportJson>(["import", "oracle.onnx", "--name", name, "--manifest", "pose.yaml", "--json"]);
    expect(plain.alreadyImported ?? false).toBe(false);
    expect(await registry.listVersions(name)).toHaveLength(3);

    // The swapped model's import at no bar, then at a bar it is below: refused, as a first import would be.
    const swapped = (...more: string[]) => ["import", "swapped.onnx", "--name", `${name}-swapped`, "--manifest", "pose.yaml", "--ap-gate", "--val-set", sets.validation, ...more];
    expect((await cli(swapped())).code).toBe(0);
    const refused = await cli(swapped("--min-ap", "0.5"));
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/nothing imported: AP 0\.0000 on \S+ is below min_ap 0\.5 \(measured when \S+ was imported\)/);
  });
});
