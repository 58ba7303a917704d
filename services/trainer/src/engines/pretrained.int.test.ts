import { execFile } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { AppError, Code } from "@poseloop/core";
import { makeTempDir } from "@poseloop/testkit";
import { defineModel, type ModelConfig } from "@poseloop/train";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadPretrained, readPretrained, type PretrainedTarget } from "./pretrained.js";

// Debian's interpreter, where CI installs python3-torch: a missing torch fails these tests, it never skips them.
const PYTHON = "/usr/bin/python3";

// libs/train/fixtures/make_goldens.py's "hrnet-w4": every kind of transition and fuse path, tiny.
const MODEL: ModelConfig = {
  architecture: "hrnet",
  inputWidth: 64,
  inputHeight: 64,
  numKeypoints: 17,
  hrnet: {
    stemWidth: 8,
    stage1Planes: 8,
    stages: [
      { numModules: 1, numBranches: 2, block: "BASIC", numBlocks: [1, 1], numChannels: [4, 8] },
      { numModules: 2, numBranches: 3, block: "BASIC", numBlocks: [1, 1, 1], numChannels: [4, 8, 16] },
      { numModules: 1, numBranches: 4, block: "BASIC", numBlocks: [1, 1, 1, 1], numChannels: [4, 8, 16, 32] },
    ],
  },
};

/** Values the file holds for the i-th target, exact in float32: both sides compute them the same way. */
function valueOf(i: number, j: number): number {
  return (j % 997) / 8 + (i % 13);
}

/**
 * Writes .pth files as the reference repo's DataParallel training saves them: `module.` before every name, and
 * the BatchNorm counters (`num_batches_tracked`) beside every running_var; each file's `edit` then runs on
 * the OrderedDict `state`. One interpreter writes them all (importing torch takes seconds).
 */
const WRITER = `
import collections, json, sys, torch
spec = json.load(open(sys.argv[1]))
for file in spec["files"]:
    state = collections.OrderedDict()
    for i, (name, shape) in enumerate(spec["targets"]):
        n = 1
        for d in shape: n *= d
        state["module." + name] = ((torch.arange(n) % 997).float() / 8 + (i % 13)).reshape(shape)
        if name.endswith(".running_var"):
            state["module." + name[: -len("running_var")] + "num_batches_tracked"] = torch.tensor(100)
    exec(file["edit"])
    torch.save(state, file["out"])
`;

/** What each test's file changes in the reference-named state. */
const EDITS = {
  "pose_hrnet_w4.pth": "",
  "wrong.pth": [
    'del state["module.stage3.1.fuse_layers.2.0.1.1.running_mean"]',
    'state["module.layer1.0.conv2.weight"] = torch.zeros(8, 8, 1, 1)',
    'state["module.foo.bar"] = torch.zeros(3)',
  ].join("\n"),
  "coco21.pth": ['state["module.final_layer.weight"] = torch.zeros(21, 4, 1, 1)', 'state["module.final_layer.bias"] = torch.zeros(21)'].join("\n"),
};

const execFileAsync = promisify(execFile);
let dir: { path: string; remove: () => Promise<void> };
let targets: PretrainedTarget[];

function checkpoint(name: keyof typeof EDITS): string {
  return join(dir.path, name);
}

beforeAll(async () => {
  dir = await makeTempDir("poseloop-pretrained-");
  const { registry } = defineModel(MODEL);
  targets = [...registry.params, ...registry.buffers];
  const spec = join(dir.path, "spec.json");
  const files = Object.entries(EDITS).map(([name, edit]) => ({ out: join(dir.path, name), edit }));
  await writeFile(spec, JSON.stringify({ targets: targets.map((t) => [t.name, t.shape]), files }));
  await execFileAsync(PYTHON, ["-c", WRITER, spec], { timeout: 60_000 });
});

afterAll(async () => {
  await dir.remove();
});

describe("loadPretrained", () => {
  it("maps a reference-named HRNet file onto every param and buffer of the zoo model", async () => {
    const file = checkpoint("pose_hrnet_w4.pth");
    const weights = await loadPretrained({ python: PYTHON, file, architecture: "hrnet", targets, env: { PATH: process.env.PATH } });
    expect([...weights.keys()].sort()).toEqual(targets.map((t) => t.name).sort());
    targets.forEach((target, i) => {
      const values = weights.get(target.name) as Float32Array;
      expect(values.length, target.name).toBe(target.shape.reduce((a, b) => a * b, 1));
      const wrong = values.findIndex((v, j) => v !== valueOf(i, j));
      expect(wrong, `${target.name}[${wrong}]`).toBe(-1);
    });
  });

  it("lists every problem of a wrong file as FAILED_PRECONDITION", async () => {
    const file = checkpoint("wrong.pth");
    const error = await loadPretrained({ python: PYTHON, file, architecture: "hrnet", targets, displayName: "wrong.pth", env: { PATH: process.env.PATH } }).catch((e: unknown) => e);
    expect(AppError.is(error, Code.FAILED_PRECONDITION), String(error)).toBe(true);
    const problems = (error as AppError).problems;
    expect([...problems].sort()).toEqual([
      "module.foo.bar: in the file, not in the model",
      "module.layer1.0.conv2.weight: shape [8,8,1,1] in the file, the model needs [8,8,3,3]",
      "stage3.1.fuse_layers.2.0.1.1.running_mean: not in the file",
    ]);
    expect((error as AppError).message).toMatch(/^MODEL\.PRETRAINED wrong\.pth: 3 problems: /);
  });

  it("keeps a skipped head of another keypoint count at its initialization", async () => {
    const file = checkpoint("coco21.pth");
    const result = await readPretrained({ python: PYTHON, file, architecture: "hrnet", targets, skip: ["final_layer."], env: { PATH: process.env.PATH } });
    expect(result.skipped).toEqual(["final_layer.weight", "final_layer.bias"]);
    expect(result.weights.has("final_layer.weight")).toBe(false);
    expect(result.weights.size).toBe(targets.length - 2);
  });

  it("names a python that cannot be started", async () => {
    const error = await loadPretrained({ python: join(dir.path, "no-python"), file: join(dir.path, "x.pth"), architecture: "hrnet", targets }).catch((e: unknown) => e);
    expect(AppError.is(error, Code.FAILED_PRECONDITION)).toBe(true);
    expect((error as AppError).message).toContain("no-python not found");
  });
});
