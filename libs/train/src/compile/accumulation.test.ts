import { describe, expect, it } from "vitest";
import { relu } from "../ops/basic.js";
import { Conv2d } from "../nn/layers.js";
import { Registry, initialize } from "../nn/parameters.js";
import { Rng } from "../rng.js";
import { StepEngine } from "../runner/step-engine.js";
import type { ModelDefinition } from "../zoo/model-config.js";

/**
 * A model without BatchNorm: with BN, k micro-batches are not one big batch (their statistics differ), in
 * PyTorch as here, so the equivalence is checked on convolutions alone.
 */
function convNet(): ModelDefinition {
  const registry = new Registry();
  const c1 = new Conv2d(registry, "c1", 3, 8, 3, { stride: 2, bias: true });
  const c2 = new Conv2d(registry, "c2", 8, 8, 3, { stride: 2, bias: true });
  const head = new Conv2d(registry, "head", 8, 4, 1, { bias: true });
  return {
    config: { architecture: "lite", inputWidth: 16, inputHeight: 16, numKeypoints: 4 },
    registry,
    heatmapWidth: 4,
    heatmapHeight: 4,
    forward: (ctx, x) => head.forward(ctx, relu(ctx.tape, c2.forward(ctx, relu(ctx.tape, c1.forward(ctx, x))))),
  };
}

describe("gradient accumulation", () => {
  it("k micro-batches give one update equal to the large batch, up to float rounding", async () => {
    const rng = new Rng(4);
    const images = Float32Array.from({ length: 8 * 3 * 16 * 16 }, () => rng.normal());
    const targets = Float32Array.from({ length: 8 * 4 * 4 * 4 }, () => rng.uniform());
    const weights = Float32Array.from({ length: 8 * 4 }, (_, i) => (i % 5 === 0 ? 0 : 1));
    const run = async (batchSize: number, k: number) => {
      const model = convNet();
      const training = { batchSize, gradAccumSteps: k, clipGradNorm: 0.1, optimizer: { kind: "adamw" } } as const;
      const engine = await StepEngine.fromDefinition(model, { model: model.config, training, seed: 1 });
      const init = new Rng(9);
      engine.loadWeights(new Map(model.registry.params.map((spec) => [spec.name, initialize({ ...spec, init: { kind: "normal", std: 0.3 } }, init)])));
      const per = 8 / k;
      for (let i = 0; i < k; i++) {
        await engine.run(
          {
            images: images.subarray(i * per * 768, (i + 1) * per * 768),
            targets: targets.subarray(i * per * 64, (i + 1) * per * 64),
            targetWeights: weights.subarray(i * per * 4, (i + 1) * per * 4),
          },
          1e-2,
        );
      }
      const out = engine.weights().params;
      await engine.release();
      return out;
    };
    const big = await run(8, 1);
    const accumulated = await run(2, 4);
    for (const [name, value] of big) {
      const other = accumulated.get(name) as Float32Array;
      let worst = 0;
      for (let i = 0; i < value.length; i++) worst = Math.max(worst, Math.abs((value[i] as number) - (other[i] as number)));
      expect(worst, name).toBeLessThan(1e-6);
    }
  });
});
