import { decodeImage } from "@poseloop/vision";
import { describe, expect, it } from "vitest";
import { niceTicks, PLOT_HEIGHT, PLOT_WIDTH, renderResultPlots, tickLabel } from "./results-plots.js";
import { RunResults } from "./run-results.js";

function results(): RunResults {
  const r = new RunResults();
  for (let epoch = 1; epoch <= 3; epoch++) {
    for (let chunk = 1; chunk <= 4; chunk++) {
      const step = (epoch - 1) * 8 + chunk * 2;
      r.recordChunk({ step, epoch, loss: 0.01 / step, lr: 0.001 * 0.5 ** (epoch - 1), batches: 2, samples: 16, seconds: 0.5 });
    }
    r.endEpoch(epoch, epoch * 8);
    r.recordValidation(epoch, { ap: 0.2 * epoch, ap50: 0.3 * epoch, ap75: 0.1 * epoch, apMedium: -1, apLarge: 0.2 * epoch, ar: 0.25 * epoch, ar50: 0.3, ar75: 0.2, seconds: 1 }, [
      { name: "left_eye", labelled: 5, missRate: 0.4, swapRate: 0.5 },
      { name: "right_eye", labelled: 5, missRate: 0.2, swapRate: 0 },
    ]);
  }
  return r;
}

describe("renderResultPlots", () => {
  it("draws loss, LR, AP and keypoint-miss PNGs that decode to the plot size and are not blank", async () => {
    const plots = await renderResultPlots(results());
    expect(plots.map((p) => p.name)).toEqual(["loss.png", "lr.png", "ap.png", "keypoint-misses.png"]);
    for (const plot of plots) {
      const image = await decodeImage(plot.png);
      expect([image.width, image.height]).toEqual([PLOT_WIDTH, PLOT_HEIGHT]);
      // Coloured pixels: a series or a bar was drawn, not just the black axes on white.
      let coloured = 0;
      for (let i = 0; i < image.data.length; i += 3) {
        const [r, g, b] = [image.data[i] as number, image.data[i + 1] as number, image.data[i + 2] as number];
        if (Math.max(r, g, b) - Math.min(r, g, b) > 60) coloured++;
      }
      expect(coloured, plot.name).toBeGreaterThan(100);
    }
  });

  it("leaves out the keypoint plot before any validation, and still draws empty axes", async () => {
    const r = new RunResults();
    const plots = await renderResultPlots(r);
    expect(plots.map((p) => p.name)).toEqual(["loss.png", "lr.png", "ap.png"]);
  });
});

describe("axis ticks", () => {
  it("steps by 1, 2 or 5 times a power of ten", () => {
    expect(niceTicks(0, 1)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(niceTicks(0, 37, 4)).toEqual([0, 10, 20, 30]);
    expect(tickLabel(0.00025)).toBe("2.5e-4");
    expect(tickLabel(0.5)).toBe("0.5");
    expect(tickLabel(120000)).toBe("1.2e5");
  });
});
