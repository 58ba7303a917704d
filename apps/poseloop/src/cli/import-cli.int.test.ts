import { execFile } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { InferenceClient, TrainerClient } from "@poseloop/client";
import { AppError, Code, silentLogger } from "@poseloop/core";
import { loadConfig as loadInferencerConfig, startInferencer, type InferencerProcess } from "@poseloop/inferencer";
import { BLAZEPOSE33 } from "@poseloop/pose";
import { makeTempDir, NatsServer, waitFor } from "@poseloop/testkit";
import { loadConfig as loadTrainerConfig, startTrainer, type TrainerProcess } from "@poseloop/trainer";
import { decodeImage, encodePng, type RgbImage } from "@poseloop/vision";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliRunner } from "../testing/cli-runner.js";
import { ffmpegPath, VideoFrameReader } from "./ffmpeg-video.js";

// Models made elsewhere, end to end: tiny SimpleBaseline-like nets exported by PyTorch (torch.onnx.export), a
// manifest YAML each, `poseloop import` into a real trainer over gRPC on a real nats-server, served by real
// inferencers (onnxruntime), drawn by `poseloop detect`, and written back out by `poseloop export`.

const PYTHON = process.env["POSELOOP_TEST_PYTHON"] ?? "/usr/bin/python3";
const body = `body-${process.pid}`;
const blaze = `blaze-${process.pid}`;
const refused = `refused-${process.pid}`;

/**
 * Two nets with random weights (seeded): 48x64 crops → 3 stride-2 convs → a stride-2 deconv → 1x1 conv to K heatmaps
 * of 12x16, BatchNorm in eval mode, heatmap peaks above 0. Each one's reference keypoints on the frame: the heatmap argmax computed
 * by PyTorch on the normalized frame, times the stride 4 (the manifests ask for no refinement).
 */
const EXPORT_SCRIPT = `
import json, sys
import numpy as np
import torch
from torch import nn

out = sys.argv[1]
torch.manual_seed(7)

def net(k):
    layers = []
    c = 3
    for width in (8, 16, 16):
        layers += [nn.Conv2d(c, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU()]
        c = width
    layers += [nn.ConvTranspose2d(c, 16, 4, 2, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, k, 1)]
    model = nn.Sequential(*layers)
    # Positive peaks: a maximum at or below 0 decodes as "no keypoint" (MSRA's rule).
    with torch.no_grad():
        layers[-1].bias.add_(3.0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()

frame = np.random.RandomState(3).randint(0, 256, size=(64, 48, 3)).astype(np.uint8)
frame.tofile(out + "/frame.rgb")
mean = np.array([123.675, 116.28, 103.53], dtype=np.float32)
std = np.array([58.395, 57.12, 57.375], dtype=np.float32)
x = torch.from_numpy(((frame.astype(np.float32) - mean) / std).transpose(2, 0, 1)[None].copy())
refs = {}
for name, k, output in (("body", 17, "heatmaps"), ("blaze", 33, "landmark_heatmaps")):
    model = net(k)
    torch.onnx.export(model, x, out + "/" + name + ".onnx", input_names=["image"], output_names=[output],
                      dynamic_axes={"image": {0: "batch"}, output: {0: "batch"}}, opset_version=13)
    with torch.no_grad():
        h = model(x)[0]
    flat = h.reshape(k, -1)
    score, index = flat.max(dim=1)
    refs[name] = [[float((i % 12) * 4), float((i // 12) * 4), float(s)] for s, i in zip(score.tolist(), index.tolist())]
json.dump(refs, open(out + "/refs.json", "w"))
`;

function manifest(keypoints: string, output: string, extra = ""): string {
  return [
    "kind: pose",
    "architecture: simplebaseline-tiny",
    "input:",
    "  name: image",
    "  width: 48",
    "  height: 64",
    "  channel_order: rgb",
    "  mean: [123.675, 116.28, 103.53]",
    "  std: [58.395, 57.12, 57.375]",
    `keypoints: ${keypoints}`,
    "codec:",
    "  type: heatmap",
    "  width: 12",
    "  height: 16",
    "  sigma: 2",
    "  refinement: none",
    `outputs: [${output}]`,
    extra,
  ].join("\n");
}

/** A box whose padded crop region (x1.25) is the whole 48x64 frame: the crop is the frame, pixel for pixel. */
const WHOLE_CROP = { x: 4.8, y: 6.4, width: 38.4, height: 51.2 };

let nats: NatsServer;
let dir: { path: string; remove: () => Promise<void> };
let trainer: TrainerProcess;
let inferencers: InferencerProcess[] = [];
let refs: Record<"body" | "blaze", [number, number, number][]>;
let frame: Uint8Array;

const envFor = (inferencer?: InferencerProcess): Record<string, string> => ({
  POSELOOP_TRAINER_ADDR: `127.0.0.1:${trainer.address.port}`,
  POSELOOP_INFERENCER_ADDR: inferencer === undefined ? "127.0.0.1:1" : `127.0.0.1:${inferencer.address.port}`,
});
let env: Record<string, string> = {};
const { cli, cliJson } = cliRunner(() => ({ env, cwd: dir.path }));

async function servedBy(inferencer: InferencerProcess, version: string): Promise<InferenceClient> {
  const client = new InferenceClient({ address: `127.0.0.1:${inferencer.address.port}` });
  await waitFor(async () => (await client.getServingModel()).manifest?.model?.version === version, { timeoutMs: 20_000, what: `version ${version} serving` });
  return client;
}

interface ImportJson {
  manifest: { model: { name: string; version: string; digest: string }; keypointSchema: { name: string; keypointNames: string[] } };
  promoted: boolean;
}

beforeAll(async () => {
  dir = await makeTempDir("poseloop-import-cli-");
  const exported = promisify(execFile)(PYTHON, ["-c", EXPORT_SCRIPT, dir.path], { timeout: 60_000 });
  nats = await NatsServer.start();
  const common = { POSELOOP_NATS_URL: nats.url, POSELOOP_LOG_LEVEL: "error" };
  [trainer, ...inferencers] = await Promise.all([
    startTrainer(loadTrainerConfig({ ...common, POSELOOP_TRAINER_LISTEN: "127.0.0.1:0", POSELOOP_DATA_ROOT: join(dir.path, "data"), POSELOOP_WORK_DIR: join(dir.path, "work"), POSELOOP_MAX_CONCURRENT_JOBS: "0", POSELOOP_PYTHON: "/bin/false" }), silentLogger),
    startInferencer(loadInferencerConfig({ ...common, POSELOOP_INFERENCER_LISTEN: "127.0.0.1:0", POSELOOP_MODEL: body }), silentLogger),
    startInferencer(loadInferencerConfig({ ...common, POSELOOP_INFERENCER_LISTEN: "127.0.0.1:0", POSELOOP_MODEL: blaze }), silentLogger),
  ]);
  await exported;
  refs = JSON.parse(await readFile(join(dir.path, "refs.json"), "utf8")) as typeof refs;
  frame = new Uint8Array(await readFile(join(dir.path, "frame.rgb")));
  await writeFile(join(dir.path, "body.yaml"), manifest("coco-17", "heatmaps"));
  await writeFile(join(dir.path, "blaze.yaml"), manifest("blazepose-33", "landmark_heatmaps"));
  env = envFor();
}, 90_000);

afterAll(async () => {
  await Promise.all([trainer?.stop(), ...inferencers.map((i) => i.stop())]);
  await nats?.dispose();
  await dir?.remove();
});

describe("poseloop import", () => {
  it("publishes a PyTorch export that an inferencer serves with the keypoints of its own heatmap argmax", async () => {
    const imported = await cliJson<ImportJson>(["import", "body.onnx", "--name", body, "--manifest", "body.yaml", "--json"]);
    expect(imported.promoted).toBe(true);
    expect(imported.manifest.keypointSchema.name).toBe("coco-17");
    const client = await servedBy(inferencers[0] as InferencerProcess, imported.manifest.model.version);
    try {
      const result = await client.detect({ raw: { width: 48, height: 64, data: frame }, personBoxes: [WHOLE_CROP] });
      const keypoints = result.persons[0]?.keypoints ?? [];
      expect(keypoints).toHaveLength(17);
      keypoints.forEach((keypoint, k) => {
        const [x, y, score] = refs.body[k] as [number, number, number];
        // float32 on the wire; a wrong argmax is off by a whole heatmap cell, 4 pixels.
        expect(keypoint.x, `keypoint ${k} x`).toBeCloseTo(x, 3);
        expect(keypoint.y, `keypoint ${k} y`).toBeCloseTo(y, 3);
        expect(keypoint.score).toBeCloseTo(score, 4);
      });
    } finally {
      client.close();
    }
  });

  it("serves a BlazePose-33 model and draws its 33 landmarks' skeleton", async () => {
    const { code, stdout, stderr } = await cli(["import", "blaze.onnx", "--name", blaze, "--manifest", "blaze.yaml"]);
    expect(code, stderr).toBe(0);
    expect(stdout).toMatch(new RegExp(`^imported ${blaze}@\\S+ \\(fp32, simplebaseline-tiny\\), 33 keypoints \\(blazepose-33\\): serving now`));
    const version = /@(\S+)/.exec(stdout)?.[1] ?? "";
    (await servedBy(inferencers[1] as InferencerProcess, version)).close();
    env = envFor(inferencers[1]);
    // A frame 4x the crop: the keypoints land 4x apart, the limbs are long enough to see.
    const big = new Uint8Array(192 * 256 * 3).fill(40);
    const png = await encodePng({ width: 192, height: 256, data: big });
    await writeFile(join(dir.path, "grey.png"), png);
    const detected = await cli(["detect", "grey.png", "--box", "19.2,25.6,153.6,204.8", "--min-score", "0", "--out", "drawn.png"]);
    expect(detected.code, detected.stderr).toBe(0);
    expect(detected.stdout).toContain("left_foot_index");
    expect(detected.stdout.split("\n").filter((line) => /^ {2}\S+\s+-?\d/.test(line))).toHaveLength(33);
    const drawn = await decodeImage(await readFile(join(dir.path, "drawn.png")));
    // Every BlazePose limb between two distinct points (scores of at least --min-score 0) is drawn: its midpoint
    // is no longer the background.
    const person = JSON.parse((await cli(["detect", "grey.png", "--box", "19.2,25.6,153.6,204.8", "--json"])).stdout) as { persons: { keypoints: { x?: number; y?: number; score?: number }[] }[] };
    const points = person.persons[0]?.keypoints ?? [];
    expect(points).toHaveLength(33);
    let limbs = 0;
    for (const [a, b] of BLAZEPOSE33.skeleton) {
      const [p, q] = [points[a], points[b]];
      const [x, y] = [Math.round(((p?.x ?? 0) + (q?.x ?? 0)) / 2), Math.round(((p?.y ?? 0) + (q?.y ?? 0)) / 2)];
      if (Math.hypot((p?.x ?? 0) - (q?.x ?? 0), (p?.y ?? 0) - (q?.y ?? 0)) < 8 || y < 24 || (p?.score ?? 0) < 0 || (q?.score ?? 0) < 0) continue;
      const i = 3 * (y * drawn.width + x);
      expect([drawn.data[i], drawn.data[i + 1], drawn.data[i + 2]], `limb ${a}-${b} at ${x},${y}`).not.toEqual([40, 40, 40]);
      limbs++;
    }
    expect(limbs).toBeGreaterThan(10);
    env = envFor();
  });

  it("refuses a broken file and a wrong manifest with every problem, and publishes nothing", async () => {
    await writeFile(join(dir.path, "broken.onnx"), "this is not an ONNX model");
    const broken = await cli(["import", "broken.onnx", "--name", refused, "--manifest", "body.yaml"]);
    expect(broken.code).not.toBe(0);
    expect(broken.stderr).toMatch(/invalid model refused-\d+ \(1 problem\)/);
    expect(broken.stderr).toMatch(/not a loadable ONNX model/);

    // Input and output names that are not the model's: both named.
    await writeFile(join(dir.path, "names.yaml"), manifest("coco-17", "keypoint_maps").replace("  name: image", "  name: pixels"));
    const names = await cli(["import", "body.onnx", "--name", refused, "--manifest", "names.yaml"]);
    expect(names.code).not.toBe(0);
    expect(names.stderr).toMatch(/\(2 problems\)/);
    expect(names.stderr).toMatch(/no input named pixels/);
    expect(names.stderr).toMatch(/no output named keypoint_maps/);

    // A 17-name schema for a 33-channel model, and heatmaps of the wrong size: the shapes it gives and expects.
    await writeFile(join(dir.path, "shapes.yaml"), manifest("coco-17", "landmark_heatmaps").replace("  width: 12", "  width: 24"));
    const shapes = await cli(["import", "blaze.onnx", "--name", refused, "--manifest", "shapes.yaml"]);
    expect(shapes.code).not.toBe(0);
    expect(shapes.stderr).toMatch(/output landmark_heatmaps has shape \[8, 33, 16, 12\] .* expect \[8, 17, 16, 24\]/);

    // A manifest with several mistakes: each one listed.
    await writeFile(join(dir.path, "bad.yaml"), manifest("{ names: [a, b], flip_pairs: [[0, 5]] }", "heatmaps, extra", "colour: red"));
    const bad = await cli(["import", "body.onnx", "--name", refused, "--manifest", "bad.yaml"]);
    expect(bad.code).not.toBe(0);
    for (const problem of [/colour: unknown key/, /flip pair \[0, 5\] is invalid/, /a heatmap model has 1 output, the manifest names 2/]) expect(bad.stderr).toMatch(problem);

    const trainerClient = new TrainerClient({ address: env["POSELOOP_TRAINER_ADDR"] as string });
    try {
      const error = await trainerClient.exportModel(refused).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(AppError);
      expect((error as AppError).code).toBe(Code.NOT_FOUND);
    } finally {
      trainerClient.close();
    }
  });

  it("names and draws the keypoints of a schema the manifest declares inline, in detect and in stream", async () => {
    // A 5-keypoint net made as the others are; no known schema has 5 keypoints, so only the manifest names them.
    const hand = `hand-${process.pid}`;
    const script = EXPORT_SCRIPT.replace(/^for name, k, output in .*:$/m, 'for name, k, output in (("hand", 5, "heatmaps"),):');
    expect(script).not.toBe(EXPORT_SCRIPT);
    await mkdir(join(dir.path, "hand"));
    await promisify(execFile)(PYTHON, ["-c", script, join(dir.path, "hand")], { timeout: 60_000 });
    const names = ["wrist", "thumb_tip", "index_tip", "middle_tip", "little_tip"];
    const limbs = [[0, 1], [0, 2], [0, 3], [0, 4]] as const;
    await writeFile(join(dir.path, "hand.yaml"), manifest(`{ name: hand-5, names: [${names.join(", ")}], skeleton: [${limbs.map(([a, b]) => `[${a}, ${b}]`).join(", ")}] }`, "heatmaps"));
    const imported = await cli(["import", "hand/hand.onnx", "--name", hand, "--manifest", "hand.yaml"]);
    expect(imported.code, imported.stderr).toBe(0);
    const version = /@(\S+)/.exec(imported.stdout)?.[1] ?? "";
    const inferencer = await startInferencer(
      loadInferencerConfig({ POSELOOP_NATS_URL: nats.url, POSELOOP_LOG_LEVEL: "error", POSELOOP_INFERENCER_LISTEN: "127.0.0.1:0", POSELOOP_MODEL: hand }),
      silentLogger,
    );
    try {
      (await servedBy(inferencer, version)).close();
      env = envFor(inferencer);
      await mkdir(join(dir.path, "hand-frames"));
      await writeFile(join(dir.path, "hand-frames", "grey.png"), await encodePng({ width: 192, height: 256, data: new Uint8Array(192 * 256 * 3).fill(40) }));
      const box = ["--box", "19.2,25.6,153.6,204.8"];
      const detected = await cli(["detect", "hand-frames/grey.png", ...box, "--min-score", "0", "--out", "hand.png"]);
      expect(detected.code, detected.stderr).toBe(0);
      // Each keypoint line under its declared name, in the manifest's order.
      expect(detected.stdout.split("\n").filter((line) => /^ {2}\S+\s+-?\d/.test(line)).map((line) => line.trim().split(/\s+/)[0])).toEqual(names);

      // Midway along each declared limb between two distinct joints in the picture, the limb colour (green: the
      // names have no side) where the background was; a 5-keypoint result drawn by its count alone has joints only.
      const limbsDrawn = (picture: RgbImage, points: readonly { x?: number; y?: number }[]): number => {
        let drawn = 0;
        for (const [a, b] of limbs) {
          const [p, q] = [points[a] ?? {}, points[b] ?? {}];
          const [x, y] = [Math.round(((p.x ?? 0) + (q.x ?? 0)) / 2), Math.round(((p.y ?? 0) + (q.y ?? 0)) / 2)];
          if (Math.hypot((p.x ?? 0) - (q.x ?? 0), (p.y ?? 0) - (q.y ?? 0)) < 12 || y < 24 || y >= picture.height || x < 0 || x >= picture.width) continue;
          const i = 3 * (y * picture.width + x);
          const [red, green, blue] = [picture.data[i] ?? 0, picture.data[i + 1] ?? 0, picture.data[i + 2] ?? 0];
          expect(red < 110 && green > 140 && blue < 110, `limb ${a}-${b} at ${x},${y} is ${red},${green},${blue}`).toBe(true);
          drawn++;
        }
        return drawn;
      };
      const json = JSON.parse((await cli(["detect", "hand-frames/grey.png", ...box, "--json"])).stdout) as { persons: { keypoints: { x?: number; y?: number }[] }[] };
      expect(limbsDrawn(await decodeImage(await readFile(join(dir.path, "hand.png"))), json.persons[0]?.keypoints ?? [])).toBeGreaterThan(1);

      // The stream's video draws the same skeleton, its schema learnt from the version its results name.
      const streamed = await cli(["stream", "hand-frames", "--whole-frame", "--min-score", "0", "--out", "hand.gif", "--json"]);
      expect(streamed.code, streamed.stderr).toBe(0);
      const result = streamed.stdout.split("\n").filter((line) => line !== "").map((line) => JSON.parse(line) as { type: string; result?: { persons: { keypoints: { x?: number; y?: number }[] }[] } }).find((line) => line.type === "result");
      const reader = await VideoFrameReader.open(ffmpegPath({}), { input: join(dir.path, "hand.gif") });
      try {
        const frames: Uint8Array[] = [];
        for await (const videoFrame of reader.frames()) frames.push(videoFrame);
        expect(frames).toHaveLength(1);
        expect(reader.info).toMatchObject({ width: 192, height: 256 });
        expect(limbsDrawn({ width: 192, height: 256, data: frames[0] ?? new Uint8Array() }, result?.result?.persons[0]?.keypoints ?? [])).toBeGreaterThan(1);
      } finally {
        await reader.close();
      }
    } finally {
      env = envFor();
      await inferencer.stop();
    }
  }, 120_000);
});

describe("poseloop export", () => {
  it("writes the model and its manifest, which import again as the same model", async () => {
    const { code, stdout, stderr } = await cli(["export", blaze, "--out", "exported"]);
    expect(code, stderr).toBe(0);
    const [, modelFile, manifestFile] = /to (\S+\.onnx) and (\S+\.yaml)$/m.exec(stdout) ?? [];
    const yaml = await readFile(manifestFile ?? "", "utf8");
    expect(yaml).toContain("keypoints: blazepose-33");
    expect(await readFile(modelFile ?? "")).toEqual(await readFile(join(dir.path, "blaze.onnx")));
    const again = await cliJson<ImportJson>(["import", modelFile ?? "", "--name", `${blaze}-again`, "--manifest", manifestFile ?? "", "--skip-promotion", "--json"]);
    expect(again.promoted).toBe(false);
    const original = await cliJson<{ version: string; digest: string }>(["export", blaze, "--out", "exported", "--json"]);
    expect(again.manifest.model.digest).toBe(original.digest);
    const reexported = await cli(["export", `${blaze}-again@${again.manifest.model.version}`, "--out", "again"]);
    expect(reexported.code, reexported.stderr).toBe(0);
    const againYaml = await readFile(/and (\S+\.yaml)$/m.exec(reexported.stdout)?.[1] ?? "", "utf8");
    // The same manifest but for the header naming the version.
    expect(againYaml.split("\n").filter((line) => !line.startsWith("#"))).toEqual(yaml.split("\n").filter((line) => !line.startsWith("#")));
  });
});
