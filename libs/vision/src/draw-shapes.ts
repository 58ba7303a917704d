import type { Rgb, RgbImage } from "./rgb-image.js";

/**
 * How a shape is painted. Shapes are drawn in place with pixel (i, j) sampled at (i, j) — the pixel-index
 * coordinates that keypoints and crops use — so a joint at (x, y) lands on the pixel nearest to it.
 */
export interface ShapeStyle {
  /** Opacity 0–1; default 1. */
  readonly alpha?: number;
  /** Blend the edge pixels by their coverage; default true. Without it the edges are hard (and the colours exact). */
  readonly antialias?: boolean;
}

function blendPixel(data: Uint8Array, index: number, colour: Rgb, alpha: number): void {
  if (alpha >= 1) {
    data[index] = colour[0];
    data[index + 1] = colour[1];
    data[index + 2] = colour[2];
    return;
  }
  const r = data[index]!;
  const g = data[index + 1]!;
  const b = data[index + 2]!;
  data[index] = Math.round(r + (colour[0] - r) * alpha);
  data[index + 1] = Math.round(g + (colour[1] - g) * alpha);
  data[index + 2] = Math.round(b + (colour[2] - b) * alpha);
}

function resolveStyle(style: ShapeStyle): { alpha: number; antialias: boolean } {
  return { alpha: Math.min(1, Math.max(0, style.alpha ?? 1)), antialias: style.antialias ?? true };
}

/** Fills pixels i ∈ [x, x + width), j ∈ [y, y + height) after rounding the corners to whole pixels. */
export function fillRect(image: RgbImage, x: number, y: number, width: number, height: number, colour: Rgb, style: ShapeStyle = {}): void {
  const { alpha } = resolveStyle(style);
  if (alpha <= 0) return;
  const x0 = Math.max(0, Math.round(x));
  const y0 = Math.max(0, Math.round(y));
  const x1 = Math.min(image.width, Math.round(x + width));
  const y1 = Math.min(image.height, Math.round(y + height));
  for (let j = y0; j < y1; j++) {
    for (let i = x0, p = (j * image.width + x0) * 3; i < x1; i++, p += 3) blendPixel(image.data, p, colour, alpha);
  }
}

/** The outline of a rectangle, `thickness` pixels wide, drawn inside [x, x + width) × [y, y + height). */
export function strokeRect(
  image: RgbImage,
  x: number,
  y: number,
  width: number,
  height: number,
  colour: Rgb,
  thickness = 1,
  style: ShapeStyle = {},
): void {
  const t = Math.max(1, Math.round(thickness));
  const w = Math.round(width);
  const h = Math.round(height);
  if (w <= 2 * t || h <= 2 * t) {
    fillRect(image, x, y, w, h, colour, style);
    return;
  }
  fillRect(image, x, y, w, t, colour, style);
  fillRect(image, x, y + h - t, w, t, colour, style);
  fillRect(image, x, y + t, t, h - 2 * t, colour, style);
  fillRect(image, x + w - t, y + t, t, h - 2 * t, colour, style);
}

/**
 * A segment with round caps: every pixel within `radius` of the segment (x0, y0)–(x1, y1). This is the thick
 * line of limbs and, with both ends equal, a filled circle.
 */
export function fillCapsule(
  image: RgbImage,
  x0: number,
  y0: number,
  x1: number,
  y1: number,
  radius: number,
  colour: Rgb,
  style: ShapeStyle = {},
): void {
  const { alpha, antialias } = resolveStyle(style);
  if (alpha <= 0 || !(radius > 0) || ![x0, y0, x1, y1].every(Number.isFinite)) return;
  const reach = radius + (antialias ? 0.5 : 0);
  const left = Math.max(0, Math.ceil(Math.min(x0, x1) - reach));
  const right = Math.min(image.width - 1, Math.floor(Math.max(x0, x1) + reach));
  const top = Math.max(0, Math.ceil(Math.min(y0, y1) - reach));
  const bottom = Math.min(image.height - 1, Math.floor(Math.max(y0, y1) + reach));
  const dx = x1 - x0;
  const dy = y1 - y0;
  const lengthSq = dx * dx + dy * dy;
  const inverseLengthSq = lengthSq > 0 ? 1 / lengthSq : 0;
  const radiusSq = radius * radius;
  const reachSq = reach * reach;
  const data = image.data;
  for (let j = top; j <= bottom; j++) {
    for (let i = left, p = (j * image.width + left) * 3; i <= right; i++, p += 3) {
      const px = i - x0;
      const py = j - y0;
      let t = (px * dx + py * dy) * inverseLengthSq;
      t = t < 0 ? 0 : t > 1 ? 1 : t;
      const ex = px - t * dx;
      const ey = py - t * dy;
      const distSq = ex * ex + ey * ey;
      if (antialias) {
        if (distSq >= reachSq) continue;
        const coverage = radius + 0.5 - Math.sqrt(distSq);
        blendPixel(data, p, colour, coverage >= 1 ? alpha : coverage * alpha);
      } else if (distSq <= radiusSq) {
        blendPixel(data, p, colour, alpha);
      }
    }
  }
}

/** A filled circle. */
export function fillCircle(image: RgbImage, cx: number, cy: number, radius: number, colour: Rgb, style: ShapeStyle = {}): void {
  fillCapsule(image, cx, cy, cx, cy, radius, colour, style);
}

/** A line `thickness` pixels wide with round ends. */
export function drawLine(
  image: RgbImage,
  x0: number,
  y0: number,
  x1: number,
  y1: number,
  colour: Rgb,
  thickness = 1,
  style: ShapeStyle = {},
): void {
  fillCapsule(image, x0, y0, x1, y1, Math.max(0.5, thickness / 2), colour, style);
}

/** A filled ellipse with semi-axes rx, ry, rotated by `angle` radians (clockwise on screen, y pointing down). */
export function fillEllipse(
  image: RgbImage,
  cx: number,
  cy: number,
  rx: number,
  ry: number,
  angle: number,
  colour: Rgb,
  style: ShapeStyle = {},
): void {
  const { alpha, antialias } = resolveStyle(style);
  if (alpha <= 0 || !(rx > 0) || !(ry > 0) || ![cx, cy, angle].every(Number.isFinite)) return;
  const cos = Math.cos(angle);
  const sin = Math.sin(angle);
  const halfWidth = Math.sqrt(rx * rx * cos * cos + ry * ry * sin * sin) + 1;
  const halfHeight = Math.sqrt(rx * rx * sin * sin + ry * ry * cos * cos) + 1;
  const left = Math.max(0, Math.ceil(cx - halfWidth));
  const right = Math.min(image.width - 1, Math.floor(cx + halfWidth));
  const top = Math.max(0, Math.ceil(cy - halfHeight));
  const bottom = Math.min(image.height - 1, Math.floor(cy + halfHeight));
  const irx2 = 1 / (rx * rx);
  const iry2 = 1 / (ry * ry);
  const data = image.data;
  for (let j = top; j <= bottom; j++) {
    for (let i = left, p = (j * image.width + left) * 3; i <= right; i++, p += 3) {
      const px = i - cx;
      const py = j - cy;
      const u = px * cos + py * sin;
      const v = -px * sin + py * cos;
      const level = u * u * irx2 + v * v * iry2 - 1;
      if (!antialias) {
        if (level <= 0) blendPixel(data, p, colour, alpha);
        continue;
      }
      // First-order distance to the outline: the level set value over its gradient's length.
      const gu = u * irx2;
      const gv = v * iry2;
      const gradient = 2 * Math.sqrt(gu * gu + gv * gv);
      const distance = gradient > 0 ? level / gradient : -Infinity;
      const coverage = 0.5 - distance;
      if (coverage <= 0) continue;
      blendPixel(data, p, colour, coverage >= 1 ? alpha : coverage * alpha);
    }
  }
}

const SUBSAMPLES = [-0.375, -0.125, 0.125, 0.375] as const;

/**
 * A filled polygon given as [x0, y0, x1, y1, ...] (any shape, self-intersections by the even-odd rule). With
 * anti-aliasing, coverage is measured exactly across each row on four sub-rows per pixel.
 */
export function fillPolygon(image: RgbImage, points: readonly number[] | Float32Array | Float64Array, colour: Rgb, style: ShapeStyle = {}): void {
  const { alpha, antialias } = resolveStyle(style);
  const n = Math.floor(points.length / 2);
  if (alpha <= 0 || n < 3) return;
  let minY = Infinity;
  let maxY = -Infinity;
  for (let k = 0; k < n; k++) {
    const y = points[2 * k + 1]!;
    if (!Number.isFinite(y) || !Number.isFinite(points[2 * k]!)) return;
    minY = Math.min(minY, y);
    maxY = Math.max(maxY, y);
  }
  const top = Math.max(0, Math.floor(minY));
  const bottom = Math.min(image.height - 1, Math.ceil(maxY));
  const width = image.width;
  const coverage = new Float32Array(width + 1);
  const crossings: number[] = [];
  const samples = antialias ? SUBSAMPLES : ([0] as const);
  const weight = 1 / samples.length;
  for (let j = top; j <= bottom; j++) {
    let spanLeft = width;
    let spanRight = -1;
    for (const offset of samples) {
      const y = j + offset;
      crossings.length = 0;
      for (let k = 0; k < n; k++) {
        const ax = points[2 * k]!;
        const ay = points[2 * k + 1]!;
        const next = (k + 1) % n;
        const bx = points[2 * next]!;
        const by = points[2 * next + 1]!;
        // Half-open in y so a vertex shared by two edges is counted once.
        if (ay <= y ? by > y : by <= y) crossings.push(ax + ((y - ay) / (by - ay)) * (bx - ax));
      }
      crossings.sort((p, q) => p - q);
      for (let c = 0; c + 1 < crossings.length; c += 2) {
        // Pixel i covers [i − 0.5, i + 0.5): shift by a half so the span is in pixel units starting at 0.
        const from = Math.max(0, crossings[c]! + 0.5);
        const to = Math.min(width, crossings[c + 1]! + 0.5);
        if (to <= from) continue;
        if (!antialias) {
          for (let i = Math.ceil(from - 0.5); i < to - 0.5; i++) coverage[i] = 1;
          spanLeft = Math.min(spanLeft, Math.ceil(from - 0.5));
          spanRight = Math.max(spanRight, Math.ceil(to - 0.5) - 1);
          continue;
        }
        const first = Math.floor(from);
        const last = Math.min(width - 1, Math.ceil(to) - 1);
        spanLeft = Math.min(spanLeft, first);
        spanRight = Math.max(spanRight, last);
        if (first === last) {
          coverage[first]! += (to - from) * weight;
          continue;
        }
        coverage[first]! += (first + 1 - from) * weight;
        for (let i = first + 1; i < last; i++) coverage[i]! += weight;
        coverage[last]! += (to - last) * weight;
      }
    }
    const row = j * width * 3;
    for (let i = Math.max(0, spanLeft); i <= spanRight; i++) {
      const c = coverage[i]!;
      coverage[i] = 0;
      if (c <= 0) continue;
      blendPixel(image.data, row + i * 3, colour, c >= 0.999 ? alpha : c * alpha);
    }
  }
}
