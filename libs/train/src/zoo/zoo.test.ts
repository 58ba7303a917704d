import { encodeModel } from "@poseloop/onnx";
import * as ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import { buildInferenceModel } from "../compile/forward-graph.js";
import { initialize } from "../nn/parameters.js";
import { Rng } from "../rng.js";
import { defineModel, modelConfigProblems, type ModelConfig } from "./model-config.js";

const count = (config: ModelConfig) => defineModel(config).registry.params.reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
const at256 = { inputWidth: 192, inputHeight: 256, numKeypoints: 17 } as const;

describe("model zoo", () => {
  it.each([
    // Parameter counts published for the COCO 256x192 models (SimpleBaseline, HRNet papers and model zoos).
    ["SimpleBaseline-R50", { architecture: "simplebaseline", simpleBaseline: { depth: 50 } }, 34.0e6],
    ["SimpleBaseline-R101", { architecture: "simplebaseline", simpleBaseline: { depth: 101 } }, 53.0e6],
    ["SimpleBaseline-R152", { architecture: "simplebaseline", simpleBaseline: { depth: 152 } }, 68.6e6],
    ["HRNet-W32", { architecture: "hrnet", hrnet: { width: 32 } }, 28.5e6],
    ["HRNet-W48", { architecture: "hrnet", hrnet: { width: 48 } }, 63.6e6],
  ] as const)("%s has the reference's parameter count", (_name, config, expected) => {
    expect(Math.abs(count({ ...config, ...at256 }) - expected) / expected).toBeLessThan(0.005);
  });

  it.each([
    ["lite", { architecture: "lite", inputWidth: 48, inputHeight: 64, numKeypoints: 17 }],
    ["lite with a 1/16 stage", { architecture: "lite", lite: { channels: [8, 16, 32, 64] }, inputWidth: 48, inputHeight: 64, numKeypoints: 17 }],
    ["SimpleBaseline-R18", { architecture: "simplebaseline", simpleBaseline: { depth: 18, baseWidth: 16, deconvFilters: [32, 32, 32] }, inputWidth: 64, inputHeight: 96, numKeypoints: 17 }],
    ["HRNet-W8", { architecture: "hrnet", hrnet: { width: 8 }, inputWidth: 64, inputHeight: 96, numKeypoints: 17 }],
    ["lite with half-resolution heatmaps", { architecture: "lite", lite: { channels: [8, 16, 32, 64], heatmapStride: 2 }, inputWidth: 48, inputHeight: 64, numKeypoints: 17 }],
  ] as const)("%s exports an inference model with a dynamic batch and its heatmap resolution", async (_name, config) => {
    const model = defineModel(config);
    const rng = new Rng(1);
    const weights = {
      params: new Map(model.registry.params.map((spec) => [spec.name, initialize(spec, rng)])),
      buffers: new Map(model.registry.buffers.map((spec) => [spec.name, initialize(spec, rng)])),
    };
    const proto = buildInferenceModel(model, weights);
    // BN folded: no BatchNormalization left.
    expect(proto.graph?.node.some((node) => node.opType === "BatchNormalization")).toBe(false);
    const session = await ort.InferenceSession.create(encodeModel(proto));
    try {
      for (const batch of [1, 3]) {
        const input = new ort.Tensor("float32", new Float32Array(batch * 3 * config.inputHeight * config.inputWidth).fill(0.5), [batch, 3, config.inputHeight, config.inputWidth]);
        const out = await session.run({ input });
        const stride = "lite" in config && "heatmapStride" in config.lite ? config.lite.heatmapStride : 4;
        expect(out["heatmaps"]?.dims).toEqual([batch, 17, config.inputHeight / stride, config.inputWidth / stride]);
        expect([model.heatmapHeight, model.heatmapWidth]).toEqual([config.inputHeight / stride, config.inputWidth / stride]);
      }
    } finally {
      await session.release();
    }
  });

  it("reports every problem of an invalid config", () => {
    const problems = modelConfigProblems({ architecture: "simplebaseline", inputWidth: 100, inputHeight: 0, numKeypoints: -1, simpleBaseline: { depth: 19, deconvKernels: [5, 4, 4] } });
    expect(problems.join("\n")).toMatch(/input height/);
    expect(problems.join("\n")).toMatch(/number of keypoints/);
    expect(problems.join("\n")).toMatch(/divisible by 32/);
    expect(problems.join("\n")).toMatch(/ResNet depth must be one of 18, 34, 50, 101, 152, got 19/);
    expect(problems.join("\n")).toMatch(/unsupported deconvolution kernel 5/);
    expect(modelConfigProblems({ architecture: "lite", inputWidth: 48, inputHeight: 64, numKeypoints: 17, lite: { heatmapStride: 8 as 4 } }).join("\n")).toMatch(/heatmap stride of 8/);
    expect(() => defineModel({ architecture: "hrnet", inputWidth: 64, inputHeight: 64, numKeypoints: 17, hrnet: { stages: [{ numModules: 1, numBranches: 3, block: "BASIC", numBlocks: [1], numChannels: [8] }] } })).toThrow(/one entry per branch/);
  });

  it("initializes deterministically from the seed", () => {
    const model = defineModel({ architecture: "lite", inputWidth: 48, inputHeight: 64, numKeypoints: 17 });
    const draw = (seed: number) => {
      const rng = new Rng(seed);
      return model.registry.params.map((spec) => initialize(spec, rng));
    };
    const [a, b, c] = [draw(7), draw(7), draw(8)];
    expect(a.every((tensor, i) => Buffer.from(tensor.buffer).equals(Buffer.from((b[i] as Float32Array).buffer)))).toBe(true);
    expect(Buffer.from((a[0] as Float32Array).buffer).equals(Buffer.from((c[0] as Float32Array).buffer))).toBe(false);
  });
});
