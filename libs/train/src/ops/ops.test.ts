import { describe, expect, it } from "vitest";
import { GraphBuilder } from "@poseloop/onnx";
import { Rng } from "../rng.js";
import { gradCheck, type GradCheckInput } from "../testing/gradcheck.js";
import { Tape, type Sym } from "../tape.js";
import { add, concat, dropout, flatten, hardSwish, leakyRelu, log, mul, relu, relu6, reshape, sigmoid, silu } from "./basic.js";
import { batchNormEval, batchNormTrain } from "./batchnorm.js";
import { conv2d, convTranspose2d, type ConvOptions } from "./conv.js";
import { linear } from "./linear.js";
import { centerFocalLoss, distillKlLoss, distillMseLoss, jointsMseLoss, l1Loss, maskedL1Loss, simccKlLoss } from "./loss.js";
import { avgPool2d, globalAvgPool, maxPool2d } from "./pool.js";
import { upsampleBilinear, upsampleNearest } from "./resize.js";
import { nchwcBlockSize } from "../runner/nchwc.js";

/** Values drawn away from an activation's kinks, where a finite difference would straddle the corner. */
function awayFrom(kinks: readonly number[], shape: readonly number[], seed = 5): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => {
    for (;;) {
      const v = rng.normal() * 4;
      if (kinks.every((k) => Math.abs(v - k) > 0.05)) return v;
    }
  });
}

async function expectGradients(build: (t: Parameters<Parameters<typeof gradCheck>[0]>[0], s: readonly Sym[]) => Sym, inputs: readonly GradCheckInput[], samples = 24, nchwcBlock?: number): Promise<void> {
  const result = await gradCheck(build, inputs, { samples, ...(nchwcBlock === undefined ? {} : { nchwcBlock }) });
  expect(result.worst, result.details).toBeLessThanOrEqual(1);
}

const x4 = (shape: readonly number[], name = "x"): GradCheckInput => ({ name, shape, requiresGrad: true });

describe("convolutions pass finite differences", () => {
  it.each([
    ["3x3 stride 1 pad 1 with bias", { stride: [1, 1], pads: [1, 1, 1, 1] }, [2, 3, 7, 6], [4, 3, 3, 3], true],
    ["3x3 stride 2, asymmetric pads", { stride: [2, 2], pads: [0, 1, 1, 0] }, [2, 3, 9, 8], [4, 3, 3, 3], false],
    ["dilation 2", { dilation: [2, 2], pads: [2, 2, 2, 2] }, [1, 2, 8, 7], [3, 2, 3, 3], true],
    ["groups 2, stride 2", { group: 2, stride: [2, 2], pads: [1, 1, 1, 1] }, [2, 4, 7, 7], [6, 2, 3, 3], true],
    ["depthwise", { group: 4, pads: [1, 1, 1, 1] }, [2, 4, 6, 5], [4, 1, 3, 3], false],
    ["1x1 stride 2 (downsample)", { stride: [2, 2] }, [2, 3, 7, 7], [5, 3, 1, 1], false],
    ["1x1 stride 1", {}, [2, 3, 5, 4], [4, 3, 1, 1], true],
    ["3x2 kernel, asymmetric pads", { pads: [1, 0, 0, 1] }, [2, 3, 6, 5], [4, 3, 3, 2], false],
    ["1x1 padded past its kernel", { pads: [1, 1, 1, 1] }, [1, 2, 4, 4], [3, 2, 1, 1], false],
    // 16 input channels and more: the weight gradient as per-tap GEMMs (a strided slice of the input per tap).
    ["16 channels, 3x3 stride 1 pad 1", { pads: [1, 1, 1, 1] }, [2, 16, 5, 4], [3, 16, 3, 3], true],
    ["16 channels, 3x2 kernel, asymmetric pads", { pads: [1, 0, 0, 1] }, [2, 16, 5, 4], [3, 16, 3, 2], false],
    ["16 channels, dilation 2", { dilation: [2, 2], pads: [2, 1, 2, 1] }, [1, 16, 6, 5], [2, 16, 3, 3], false],
    ["16 channels, 3x3 unpadded", {}, [2, 16, 5, 4], [2, 16, 3, 3], false],
    ["16 channels, 3x3 stride 2", { stride: [2, 2], pads: [1, 1, 1, 1] }, [2, 16, 5, 5], [3, 16, 3, 3], false],
  ] as const)("Conv %s", async (_label, options, xShape, wShape, bias) => {
    const inputs = [x4(xShape), x4(wShape, "w"), ...(bias ? [x4([wShape[0]], "b")] : [])];
    await expectGradients((t, [x, w, b]) => conv2d(t, x as Sym, w as Sym, b, options), inputs);
  });

  it("takes a stride-1 input gradient as a Conv with the flipped kernel, a strided or grouped one as ConvTranspose", () => {
    const backwardOps = (options: ConvOptions, xShape: readonly number[], wShape: readonly number[]) => {
      const g = new GraphBuilder({ name: "conv" });
      const t = new Tape(g);
      // Only the input gradient: the weight is a constant here.
      const [x, w] = [t.sym(g.input("x", "float32", xShape), xShape, true), t.sym(g.input("w", "float32", wShape), wShape, false)];
      const y = conv2d(t, x, w, undefined, options);
      const before = g.build().graph?.node.length ?? 0;
      t.gradients(y, [x], t.sym(g.input("dy", "float32", y.shape), y.shape, false));
      return (g.build().graph?.node ?? []).slice(before).map((node) => node.opType);
    };
    expect(backwardOps({ pads: [1, 1, 1, 1] }, [1, 4, 6, 5], [8, 4, 3, 3])).toEqual(["Transpose", "Slice", "Conv"]);
    expect(backwardOps({}, [1, 4, 6, 5], [8, 4, 1, 1])).toEqual(["Transpose", "Conv"]);
    expect(backwardOps({ stride: [2, 2], pads: [1, 1, 1, 1] }, [1, 4, 6, 5], [8, 4, 3, 3])).toEqual(["ConvTranspose"]);
    expect(backwardOps({ group: 4, pads: [1, 1, 1, 1] }, [1, 4, 6, 5], [4, 1, 3, 3])).toEqual(["ConvTranspose"]);
  });

  it.each([
    ["4x4 stride 2 pad 1 (deconv head)", { stride: [2, 2], pads: [1, 1, 1, 1] }, [2, 3, 4, 3], [3, 4, 4, 4], true],
    ["3x3 stride 2 with output padding", { stride: [2, 2], pads: [1, 1, 1, 1], outputPadding: [1, 1] }, [1, 2, 4, 5], [2, 3, 3, 3], false],
    ["groups 2", { group: 2, stride: [2, 2] }, [2, 4, 3, 3], [4, 2, 2, 2], true],
  ] as const)("ConvTranspose %s", async (_label, options, xShape, wShape, bias) => {
    const group = "group" in options ? options.group : 1;
    const inputs = [x4(xShape), x4(wShape, "w"), ...(bias ? [x4([wShape[1] * group], "b")] : [])];
    await expectGradients((t, [x, w, b]) => convTranspose2d(t, x as Sym, w as Sym, b, options), inputs);
  });
});

describe("convolutions through onnxruntime's blocked (NCHWc) CPU kernels", () => {
  const opsOf = (t: Tape) => (t.g.build().graph?.node ?? []).map((node) => `${node.domain === "" ? "" : `${node.domain}:`}${node.opType}`);

  it("reads the CPU provider's channel block off the provider", async () => {
    // This machine's MLAS has blocked kernels (16 channels with AVX-512, 8 with AVX2); the probe checks the
    // whole reordered layout, not just one value.
    expect([8, 16]).toContain(await nchwcBlockSize());
  });

  it.each([
    ["3x3 stride 1 pad 1 with bias", { pads: [1, 1, 1, 1] }, [2, 16, 5, 4], [16, 16, 3, 3], true],
    ["3x3 stride 2, 16→32", { stride: [2, 2], pads: [1, 1, 1, 1] }, [2, 16, 7, 6], [32, 16, 3, 3], false],
    ["1x1 stride 1", {}, [2, 32, 4, 3], [16, 32, 1, 1], false],
    ["3x2 kernel, asymmetric pads, dilation 2", { pads: [2, 0, 1, 1], dilation: [2, 2] }, [1, 16, 7, 6], [16, 16, 3, 2], false],
  ] as const)("Conv %s passes finite differences", async (_label, options, xShape, wShape, bias) => {
    const block = (await nchwcBlockSize()) as number;
    const inputs = [x4(xShape), x4(wShape, "w"), ...(bias ? [x4([wShape[0]], "b")] : [])];
    await expectGradients((t, [x, w, b]) => conv2d(t, x as Sym, w as Sym, b, options), inputs, 24, block);
  });

  it("ConvTranspose 4x4 stride 2 (whose input gradient is a blocked Conv) passes finite differences", async () => {
    const block = (await nchwcBlockSize()) as number;
    await expectGradients((t, [x, w]) => convTranspose2d(t, x as Sym, w as Sym, undefined, { stride: [2, 2], pads: [1, 1, 1, 1] }), [x4([2, 16, 4, 3]), x4([16, 16, 4, 4], "w")], 24, block);
  });

  it("blocks the ungrouped fp32 convolutions whose channels fill whole blocks, forward and input gradient, and leaves the others standard", () => {
    const compile = (xShape: readonly number[], wShape: readonly number[], options: ConvOptions = {}) => {
      const t = new Tape(new GraphBuilder({ name: "conv" }), { nchwcBlock: 16 });
      const [x, w] = [t.sym(t.g.input("x", "float32", xShape), xShape, true), t.sym(t.g.input("w", "float32", wShape), wShape, true)];
      const y = conv2d(t, x, w, undefined, options);
      t.gradients(y, [x, w], t.sym(t.g.input("dy", "float32", y.shape), y.shape, false));
      return opsOf(t);
    };
    const blocked = compile([1, 32, 6, 5], [16, 32, 3, 3], { pads: [1, 1, 1, 1] });
    expect(blocked.filter((op) => op === "com.microsoft.nchwc:Conv")).toHaveLength(2);
    expect(blocked).not.toContain("Conv");
    expect(blocked.filter((op) => op === "com.microsoft.nchwc:ReorderInput")).toHaveLength(2);
    // 3 input channels (the stem), 17 outputs (the heatmap head), groups: standard Conv nodes.
    expect(compile([1, 3, 6, 5], [16, 3, 3, 3], { pads: [1, 1, 1, 1] })).not.toContain("com.microsoft.nchwc:Conv");
    expect(compile([1, 32, 6, 5], [17, 32, 1, 1])).not.toContain("com.microsoft.nchwc:Conv");
    expect(compile([1, 32, 6, 5], [32, 16, 3, 3], { group: 2, pads: [1, 1, 1, 1] })).not.toContain("com.microsoft.nchwc:Conv");
  });
});

describe("normalization, activations and shape ops pass finite differences", () => {
  it("BatchNorm in training mode (batch statistics)", async () => {
    await expectGradients(
      (t, [x, gamma, beta]) => {
        const mean = t.g.scalar(0);
        const running = t.g.op("Expand", [mean, t.g.int64s([3])]);
        return batchNormTrain(t, x as Sym, gamma as Sym, beta as Sym, running, running).y;
      },
      [x4([4, 3, 5, 4]), x4([3], "gamma"), x4([3], "beta")],
      40,
    );
  });

  it("BatchNorm in eval mode (running statistics)", async () => {
    await expectGradients(
      (t, [x, gamma, beta, mean, variance]) => batchNormEval(t, x as Sym, gamma as Sym, beta as Sym, (mean as Sym).value, t.g.op("Abs", [(variance as Sym).value])),
      [x4([2, 3, 4, 4]), x4([3], "gamma"), x4([3], "beta"), { name: "mean", shape: [3] }, { name: "var", shape: [3] }],
    );
  });

  it.each([
    ["ReLU", relu, [0]],
    ["LeakyReLU", (t: never, x: Sym) => leakyRelu(t, x, 0.1), [0]],
    ["ReLU6", relu6, [0, 6]],
    ["HardSwish", hardSwish, [-3, 3]],
    ["Sigmoid", sigmoid, []],
    ["SiLU", silu, []],
  ] as const)("%s", async (_label, fn, kinks) => {
    const shape = [2, 3, 4, 4];
    await expectGradients((t, [x]) => (fn as (t: unknown, x: Sym) => Sym)(t, x as Sym), [{ name: "x", shape, requiresGrad: true, values: awayFrom(kinks, shape) }]);
  });

  it("Log", async () => {
    const values = Float32Array.from({ length: 2 * 3 * 4 }, (_, i) => 0.5 + ((i * 0.37) % 3));
    await expectGradients((t, [x]) => log(t, x as Sym), [{ name: "x", shape: [2, 3, 4], requiresGrad: true, values }]);
  });

  it("residual Add and broadcasting Mul", async () => {
    await expectGradients((t, [a, b, s]) => mul(t, add(t, a as Sym, b as Sym), s as Sym), [x4([2, 3, 4, 4], "a"), x4([2, 3, 4, 4], "b"), x4([1, 3, 1, 1], "s")]);
  });

  it("Concat, Flatten and Reshape", async () => {
    await expectGradients(
      (t, [a, b]) => {
        const joined = concat(t, [a as Sym, b as Sym], 1);
        const flat = flatten(t, joined);
        return reshape(t, flat, [2, 5, 12], [2, 5, 12]);
      },
      [x4([2, 2, 3, 4], "a"), x4([2, 3, 3, 4], "b")],
    );
  });

  it("Dropout with a given mask", async () => {
    const mask = Float32Array.from({ length: 2 * 3 * 4 * 4 }, (_, i) => (i % 3 === 0 ? 0 : 1));
    await expectGradients((t, [x, m]) => dropout(t, x as Sym, m as Sym, 0.3), [x4([2, 3, 4, 4]), { name: "mask", shape: [2, 3, 4, 4], values: mask }]);
  });

  it("Linear", async () => {
    await expectGradients((t, [x, w, b]) => linear(t, x as Sym, w as Sym, b), [x4([3, 5]), x4([4, 5], "w"), x4([4], "b")]);
  });
});

describe("pooling and resizing pass finite differences", () => {
  it("MaxPool 3x3 stride 2 pad 1", async () => {
    await expectGradients((t, [x]) => maxPool2d(t, x as Sym, { kernel: [3, 3], stride: [2, 2], pads: [1, 1, 1, 1] }), [x4([2, 2, 7, 6])], 40);
  });
  it("AvgPool 2x2 and 3x3 stride 2 pad 1", async () => {
    await expectGradients((t, [x]) => avgPool2d(t, x as Sym, { kernel: [2, 2] }), [x4([2, 2, 6, 4])]);
    await expectGradients((t, [x]) => avgPool2d(t, x as Sym, { kernel: [3, 3], stride: [2, 2], pads: [1, 1, 1, 1] }), [x4([1, 2, 7, 6])]);
  });
  it("GlobalAveragePool", async () => {
    await expectGradients((t, [x]) => globalAvgPool(t, x as Sym), [x4([2, 3, 5, 4])]);
  });
  it("nearest upsampling x2 and x4", async () => {
    await expectGradients((t, [x]) => upsampleNearest(t, x as Sym, 2), [x4([2, 2, 3, 4])]);
    await expectGradients((t, [x]) => upsampleNearest(t, x as Sym, 4), [x4([1, 2, 2, 3])]);
  });
  it("bilinear resizing up and down", async () => {
    await expectGradients((t, [x]) => upsampleBilinear(t, x as Sym, 7, 10), [x4([2, 2, 3, 4])]);
    await expectGradients((t, [x]) => upsampleBilinear(t, x as Sym, 3, 2), [x4([1, 2, 6, 5])]);
  });
});

describe("losses pass finite differences", () => {
  const weights = Float32Array.from([1, 0, 1, 1, 0.5, 1]);
  it("JointsMSE with target weights", async () => {
    await expectGradients((t, [p, target, w]) => jointsMseLoss(t, p as Sym, (target as Sym).value, (w as Sym).value), [x4([2, 3, 4, 5], "pred"), { name: "target", shape: [2, 3, 4, 5] }, { name: "w", shape: [2, 3], values: weights }], 40);
  });
  it("weighted L1", async () => {
    await expectGradients((t, [p, target, w]) => l1Loss(t, p as Sym, (target as Sym).value, (w as Sym).value), [x4([2, 3, 4, 5], "pred"), { name: "target", shape: [2, 3, 4, 5] }, { name: "w", shape: [2, 3], values: weights }]);
  });
  it("SimCC KL with label softmax and smoothing", async () => {
    const labels = Float32Array.from({ length: 2 * 3 * 12 }, (_, i) => Math.exp(-(((i % 12) - 5) ** 2) / 4));
    await expectGradients(
      (t, [p, l, w]) => simccKlLoss(t, p as Sym, (l as Sym).value, (w as Sym).value, { beta: 3, labelSmoothing: 0.1 }),
      [{ name: "pred", shape: [2, 3, 12], requiresGrad: true, values: Float32Array.from({ length: 72 }, (_, i) => Math.sin(i) * 0.5) }, { name: "labels", shape: [2, 3, 12], values: labels }, { name: "w", shape: [2, 3], values: weights }],
      40,
    );
  });
  it("CenterNet focal loss on logits, positives, splats and clamped cells included", async () => {
    const shape = [2, 1, 5, 6];
    const n = 60;
    // Splats around two centers per image (exactly 1 at the centers), and logits of both signs, a few far
    // enough out that the probability clamp bites (zero gradient there, in the graph as in torch.clamp).
    const target = Float32Array.from({ length: n }, (_, i) => {
      const [x, y] = [i % 6, Math.floor(i / 6) % 5];
      const d = Math.min((x - 1) ** 2 + (y - 1) ** 2, (x - 4) ** 2 + (y - 3) ** 2);
      return Math.exp(-d / 2);
    });
    const logits = Float32Array.from({ length: n }, (_, i) => (i % 17 === 5 ? 12 : i % 19 === 7 ? -12 : Math.sin(i * 1.3) * 2.5));
    await expectGradients((t, [x, gt]) => centerFocalLoss(t, x as Sym, (gt as Sym).value), [{ name: "logits", shape, requiresGrad: true, values: logits }, { name: "target", shape, values: target }], n);
  });
  it("masked L1 at the centers", async () => {
    const mask = Float32Array.from({ length: 2 * 4 * 5 }, (_, i) => (i % 7 === 2 ? 1 : 0));
    await expectGradients((t, [p, target, m]) => maskedL1Loss(t, p as Sym, (target as Sym).value, (m as Sym).value), [x4([2, 2, 4, 5], "pred"), { name: "target", shape: [2, 2, 4, 5] }, { name: "mask", shape: [2, 1, 4, 5], values: mask }], 80);
  });
  it("distillation MSE and KL to a teacher", async () => {
    await expectGradients((t, [p, teacher]) => distillMseLoss(t, p as Sym, (teacher as Sym).value), [x4([2, 3, 4, 4], "pred"), { name: "teacher", shape: [2, 3, 4, 4] }]);
    await expectGradients((t, [p, teacher]) => distillKlLoss(t, p as Sym, (teacher as Sym).value, 2), [x4([2, 3, 8], "pred"), { name: "teacher", shape: [2, 3, 8] }]);
  });
});
