import { describe, expect, it } from "vitest";
import { colourHistogram, histogramDistance } from "./colour-histogram.js";
import { fillRect } from "./draw-shapes.js";
import { createRgbImage } from "./rgb-image.js";

describe("colourHistogram", () => {
  it("is a distribution over 64 colour bins that a cut moves and a small moving object barely does", () => {
    const grey = createRgbImage(320, 240, [128, 128, 128]);
    const histogram = colourHistogram(grey);
    expect(histogram).toHaveLength(64);
    expect(histogram.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 6);
    const withPerson = createRgbImage(320, 240, [128, 128, 128]);
    fillRect(withPerson, 100, 60, 30, 90, [200, 40, 40]);
    const moved = createRgbImage(320, 240, [128, 128, 128]);
    fillRect(moved, 110, 60, 30, 90, [200, 40, 40]);
    expect(histogramDistance(colourHistogram(withPerson), colourHistogram(moved))).toBeLessThan(0.01);
    expect(histogramDistance(histogram, colourHistogram(withPerson))).toBeCloseTo((30 * 90) / (320 * 240), 1);
    expect(histogramDistance(histogram, colourHistogram(createRgbImage(320, 240, [20, 90, 200])))).toBe(1);
  });

  it("refuses histograms of different sizes", () => {
    expect(() => histogramDistance([1], [0.5, 0.5])).toThrow(/1 and 2 bins/);
  });
});
