import { drawLine, fillCircle, fillEllipse, fillPolygon, fillRect, strokeRect, type Rgb, type RgbImage } from "@poseloop/vision";
import type { SeededRandom } from "@poseloop/core";

/** A random colour from hue, saturation and value ranges (each 0–1). */
export function randomColour(random: SeededRandom, saturation: readonly [number, number] = [0, 1], value: readonly [number, number] = [0.1, 1]): Rgb {
  const h = random.next() * 6;
  const s = random.uniform(...saturation);
  const v = random.uniform(...value);
  const sector = Math.floor(h);
  const f = h - sector;
  const p = v * (1 - s);
  const q = v * (1 - s * f);
  const t = v * (1 - s * (1 - f));
  const rgb = [
    [v, t, p],
    [q, v, p],
    [p, v, t],
    [p, q, v],
    [t, p, v],
    [v, p, q],
  ][sector % 6]!;
  return [Math.round(rgb[0]! * 255), Math.round(rgb[1]! * 255), Math.round(rgb[2]! * 255)];
}

function fillVerticalGradient(image: RgbImage, top: number, bottom: number, from: Rgb, to: Rgb): void {
  const rowBytes = image.width * 3;
  const span = Math.max(1, bottom - top - 1);
  for (let y = Math.max(0, top); y < Math.min(image.height, bottom); y++) {
    const t = (y - top) / span;
    const row = y * rowBytes;
    image.data[row] = Math.round(from[0] + (to[0] - from[0]) * t);
    image.data[row + 1] = Math.round(from[1] + (to[1] - from[1]) * t);
    image.data[row + 2] = Math.round(from[2] + (to[2] - from[2]) * t);
    for (let filled = 3; filled < rowBytes; filled *= 2) image.data.copyWithin(row + filled, row, row + Math.min(filled, rowBytes - filled));
  }
}

/**
 * Paints a cluttered scene behind the people: a wall and a floor meeting at a horizon (each a gradient),
 * overlaid with some of stripes, a checkerboard floor, soft blobs, furniture-like boxes and lines — enough
 * texture that a model cannot find people by colour alone. Returns the horizon row.
 */
export function paintBackground(image: RgbImage, random: SeededRandom): number {
  const { width, height } = image;
  const horizon = Math.round(height * random.uniform(0.3, 0.65));
  const wall = randomColour(random, [0, 0.6], [0.25, 0.95]);
  const floor = randomColour(random, [0, 0.5], [0.15, 0.8]);
  const shade = (c: Rgb, k: number): Rgb => [Math.min(255, Math.round(c[0] * k)), Math.min(255, Math.round(c[1] * k)), Math.min(255, Math.round(c[2] * k))];
  fillVerticalGradient(image, 0, horizon, wall, shade(wall, random.uniform(0.6, 1.3)));
  fillVerticalGradient(image, horizon, height, shade(floor, random.uniform(0.7, 1.1)), shade(floor, random.uniform(0.9, 1.4)));
  const size = Math.max(width, height);

  if (random.chance(0.4)) {
    // Stripes over the wall or the whole picture, at any angle.
    const angle = random.uniform(0, Math.PI);
    const period = random.uniform(0.03, 0.15) * size;
    const duty = random.uniform(0.2, 0.6);
    const colour = randomColour(random);
    const alpha = random.uniform(0.25, 0.9);
    const bottom = random.chance(0.5) ? horizon : height;
    const [dx, dy] = [Math.cos(angle), Math.sin(angle)];
    const [cx, cy] = [width / 2, bottom / 2];
    for (let offset = -size; offset < size; offset += period) {
      const points: number[] = [];
      for (const [along, across] of [
        [-size, offset],
        [size, offset],
        [size, offset + period * duty],
        [-size, offset + period * duty],
      ] as const) {
        points.push(cx + along * dx - across * dy, Math.min(bottom, Math.max(0, cy + along * dy + across * dx)));
      }
      fillPolygon(image, points, colour, { alpha });
    }
  }
  if (random.chance(0.3)) {
    // A checkerboard floor.
    const cell = random.uniform(0.04, 0.12) * size;
    const colour = randomColour(random, [0, 0.4]);
    for (let y = horizon, row = 0; y < height; y += cell, row++) {
      for (let x = (row % 2) * cell; x < width; x += 2 * cell) fillRect(image, x, y, cell, cell, colour, { alpha: 0.5 });
    }
  }
  const blobs = random.int(2, 14);
  for (let b = 0; b < blobs; b++) {
    fillEllipse(
      image,
      random.uniform(0, width),
      random.uniform(0, height),
      random.uniform(0.02, 0.25) * size,
      random.uniform(0.02, 0.2) * size,
      random.uniform(0, Math.PI),
      randomColour(random),
      { alpha: random.uniform(0.15, 0.8) },
    );
  }
  const boxes = random.int(0, 4);
  for (let b = 0; b < boxes; b++) {
    const w = random.uniform(0.05, 0.4) * width;
    const h = random.uniform(0.05, 0.5) * height;
    const x = random.uniform(-0.1, 1) * width;
    const y = horizon - h * random.uniform(0.3, 1);
    const colour = randomColour(random, [0, 0.7], [0.1, 0.9]);
    fillRect(image, x, y, w, h, colour);
    strokeRect(image, x, y, w, h, shade(colour, 0.6), Math.max(1, Math.round(size / 200)));
  }
  const lines = random.int(0, 5);
  for (let l = 0; l < lines; l++) {
    drawLine(
      image,
      random.uniform(0, width),
      random.uniform(0, height),
      random.uniform(0, width),
      random.uniform(0, height),
      randomColour(random),
      random.uniform(1, Math.max(2, size / 80)),
    );
  }
  if (random.chance(0.3)) {
    const dots = random.int(10, 60);
    const colour = randomColour(random);
    for (let d = 0; d < dots; d++) fillCircle(image, random.uniform(0, width), random.uniform(0, height), random.uniform(1, size / 60), colour, { alpha: 0.6 });
  }
  return horizon;
}
