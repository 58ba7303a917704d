import { createRgbImage } from "@poseloop/vision";
import { describe, expect, it } from "vitest";
import { DepthRaster } from "./depth-raster.js";

describe("DepthRaster", () => {
  it("keeps the nearest surface whatever the drawing order", () => {
    for (const nearFirst of [true, false]) {
      const raster = new DepthRaster(createRgbImage(40, 40));
      const far = (): void => raster.capsule([5, 20, 100], [35, 20, 100], 4, [0, 0, 255], 1);
      const near = (): void => raster.capsule([20, 5, 50], [20, 35, 50], 4, [255, 0, 0], 2);
      for (const draw of nearFirst ? [near, far] : [far, near]) draw();
      expect(raster.owner[20 * 40 + 20]).toBe(2);
      expect(raster.owner[20 * 40 + 8]).toBe(1);
      expect(raster.owner[2 * 40 + 2]).toBe(0);
      // The nearest point of a capsule along the pixel's line of sight: its axis depth minus the radius.
      expect(raster.depth[20 * 40 + 19]).toBeCloseTo(50 - Math.sqrt(16 - 0.25), 9);
    }
  });

  it("intersects spheres and slabs exactly", () => {
    const raster = new DepthRaster(createRgbImage(30, 30));
    raster.ellipsoid([15, 15, 10], [5, 0, 0, 0, 5, 0, 0, 0, 5], [200, 200, 200], 1);
    expect(raster.depth[15 * 30 + 15]).toBeCloseTo(10 - Math.sqrt(25 - 0.5), 9);
    expect(raster.owner[15 * 30 + 21]).toBe(0);
    // A slab 4 ≤ w ≤ 6 over u, v in [0, 10): in front of the sphere where they overlap.
    raster.solid(
      [
        { normal: [1, 0, 0], offset: 10 },
        { normal: [-1, 0, 0], offset: 0 },
        { normal: [0, 1, 0], offset: 20 },
        { normal: [0, -1, 0], offset: -12 },
        { normal: [0, 0, -1], offset: -4 },
        { normal: [0, 0, 1], offset: 6 },
      ],
      [
        [0, 12, 4],
        [10, 20, 6],
      ],
      [0, 255, 0],
      2,
    );
    expect(raster.owner[15 * 30 + 9]).toBe(2);
    expect(raster.depth[15 * 30 + 9]).toBe(4);
    expect(raster.owner[15 * 30 + 10]).toBe(1);
  });
});
