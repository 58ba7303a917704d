import { describe, expect, it } from "vitest";
import { fillCapsule, fillCircle, fillEllipse, fillPolygon, fillRect, strokeRect } from "./draw-shapes.js";
import { drawText, measureText } from "./bitmap-font.js";
import { createRgbImage, type Rgb, type RgbImage } from "./rgb-image.js";

const RED: Rgb = [255, 0, 0];
const pixel = (image: RgbImage, x: number, y: number): number[] => [...image.data.subarray((y * image.width + x) * 3, (y * image.width + x) * 3 + 3)];
const painted = (image: RgbImage): number => {
  let count = 0;
  for (let p = 0; p < image.width * image.height; p++) if (image.data[p * 3] !== 0) count++;
  return count;
};

describe("shapes", () => {
  it("fills whole-pixel rectangles, clipped to the image", () => {
    const image = createRgbImage(10, 10);
    fillRect(image, -3, 8, 5, 5, RED);
    expect(painted(image)).toBe(2 * 2);
    expect(pixel(image, 1, 9)).toEqual([255, 0, 0]);
    expect(pixel(image, 2, 9)).toEqual([0, 0, 0]);
    const outline = createRgbImage(10, 10);
    strokeRect(outline, 1, 1, 6, 5, RED, 1);
    expect(painted(outline)).toBe(6 * 5 - 4 * 3);
  });

  it("covers a circle's area, exactly without anti-aliasing and to within the edge with it", () => {
    const hard = createRgbImage(64, 64);
    fillCircle(hard, 31.3, 30.8, 10, RED, { antialias: false });
    expect(Math.abs(painted(hard) - Math.PI * 100)).toBeLessThan(12);
    const soft = createRgbImage(64, 64);
    fillCircle(soft, 31.3, 30.8, 10, RED);
    let coverage = 0;
    for (let p = 0; p < 64 * 64; p++) coverage += soft.data[p * 3]! / 255;
    expect(Math.abs(coverage - Math.PI * 100)).toBeLessThan(3);
    expect(pixel(soft, 31, 31)).toEqual([255, 0, 0]);
  });

  it("draws thick capsules, ellipses and polygons with the expected areas", () => {
    const capsule = createRgbImage(100, 50);
    fillCapsule(capsule, 20.2, 25.4, 70.2, 25.4, 5, RED, { antialias: false });
    expect(Math.abs(painted(capsule) - (50 * 10 + Math.PI * 25))).toBeLessThan(12);

    const ellipse = createRgbImage(100, 100);
    fillEllipse(ellipse, 50, 50, 30, 10, Math.PI / 6, RED, { antialias: false });
    expect(Math.abs(painted(ellipse) - Math.PI * 300) / (Math.PI * 300)).toBeLessThan(0.03);

    const square = createRgbImage(20, 20);
    fillPolygon(square, [2, 2, 12, 2, 12, 12, 2, 12], RED, { antialias: false });
    expect(painted(square)).toBe(100);
    const triangle = createRgbImage(40, 40);
    fillPolygon(triangle, [0, 0, 30, 0, 0, 30], RED);
    let coverage = 0;
    for (let p = 0; p < 40 * 40; p++) coverage += triangle.data[p * 3]! / 255;
    // Coverage is exact across rows and sampled four times down each: the sum is the triangle's area.
    expect(Math.abs(coverage - 450)).toBeLessThan(2);
  });

  it("blends with alpha", () => {
    const image = createRgbImage(4, 4, [0, 0, 200]);
    fillRect(image, 0, 0, 4, 4, [200, 100, 0], { alpha: 0.5 });
    expect(pixel(image, 2, 2)).toEqual([100, 50, 100]);
  });

  it("writes text with the built-in font", () => {
    const image = createRgbImage(40, 12);
    drawText(image, "Hi 1", 1, 1, [255, 255, 255]);
    expect(measureText("Hi 1")).toEqual({ width: 4 * 6 - 1, height: 7 });
    // "H" has ink down its left column; the space cell stays empty.
    for (let row = 0; row < 7; row++) expect(pixel(image, 1, 1 + row)).toEqual([255, 255, 255]);
    for (let x = 13; x < 19; x++) for (let y = 0; y < 12; y++) expect(pixel(image, x, y)).toEqual([0, 0, 0]);
    const scaled = createRgbImage(40, 20);
    drawText(scaled, "H", 0, 0, [255, 255, 255], { scale: 2 });
    expect(painted(scaled)).toBe(4 * 17);
  });
});
