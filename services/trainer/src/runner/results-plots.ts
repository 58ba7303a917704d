import { createRgbImage, drawLine, drawText, encodePng, fillRect, measureText, type Rgb, type RgbImage } from "@poseloop/vision";
import type { RunResults } from "./run-results.js";

export const PLOT_WIDTH = 640;
export const PLOT_HEIGHT = 360;

const BACKGROUND: Rgb = [255, 255, 255];
const INK: Rgb = [40, 40, 40];
const GRID: Rgb = [225, 225, 225];
const PALETTE: readonly Rgb[] = [
  [31, 119, 180],
  [255, 127, 14],
  [44, 160, 44],
  [214, 39, 40],
];
const SWAP: Rgb = [214, 39, 40];

const MARGIN = { left: 64, right: 16, top: 28, bottom: 40 } as const;

export interface ChartSeries {
  readonly name: string;
  /** x, y pairs; non-finite ys are gaps. */
  readonly points: readonly (readonly [number, number])[];
}

export interface LineChart {
  readonly title: string;
  readonly xLabel: string;
  readonly series: readonly ChartSeries[];
  /** Pins the y axis' bottom (AP plots start at 0). */
  readonly yMin?: number;
  readonly yMax?: number;
}

/** Tick values 1, 2 or 5 × 10^k apart covering [lo, hi], about `count` of them. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / Math.max(1, count);
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = ([1, 2, 5, 10].find((m) => m * power >= raw) ?? 10) * power;
  const ticks: number[] = [];
  // Integer multiples of the step, rounded, so that 3 × 0.2 is the 0.6 a label shows.
  for (let k = Math.ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k++) ticks.push(Number((k * step).toPrecision(12)));
  return ticks;
}

/** A tick label that fits the margin: 0.001, 2.5e-5, 1200. */
export function tickLabel(value: number): string {
  if (value === 0) return "0";
  const abs = Math.abs(value);
  if (abs >= 1e5 || abs < 1e-3) return value.toExponential(1).replace("e+", "e");
  return String(Number(value.toPrecision(3)));
}

interface Frame {
  readonly image: RgbImage;
  readonly x: (v: number) => number;
  readonly y: (v: number) => number;
}

/** Axes, grid, ticks with labels and a title; returns the data → pixel mapping. */
function frame(title: string, xLabel: string, x: { lo: number; hi: number; ticks: readonly number[]; labels?: readonly string[] }, y: { lo: number; hi: number }): Frame {
  const image = createRgbImage(PLOT_WIDTH, PLOT_HEIGHT, BACKGROUND);
  const left = MARGIN.left;
  const right = PLOT_WIDTH - MARGIN.right;
  const top = MARGIN.top;
  const bottom = PLOT_HEIGHT - MARGIN.bottom;
  const px = (v: number): number => left + ((v - x.lo) / (x.hi - x.lo || 1)) * (right - left);
  const py = (v: number): number => bottom - ((v - y.lo) / (y.hi - y.lo || 1)) * (bottom - top);
  for (const t of niceTicks(y.lo, y.hi)) {
    const at = py(t);
    drawLine(image, left, at, right, at, GRID, 1, { antialias: false });
    const label = tickLabel(t);
    drawText(image, label, left - 6 - measureText(label).width, at - 3, INK);
  }
  x.ticks.forEach((t, i) => {
    const at = px(t);
    drawLine(image, at, bottom, at, bottom + 4, INK, 1, { antialias: false });
    const label = x.labels?.[i] ?? tickLabel(t);
    drawText(image, label, at - measureText(label).width / 2, bottom + 8, INK);
  });
  drawLine(image, left, top, left, bottom, INK, 1, { antialias: false });
  drawLine(image, left, bottom, right, bottom, INK, 1, { antialias: false });
  drawText(image, title, (PLOT_WIDTH - measureText(title, 2).width) / 2, 6, INK, { scale: 2 });
  drawText(image, xLabel, (left + right - measureText(xLabel).width) / 2, PLOT_HEIGHT - 12, INK);
  return { image, x: px, y: py };
}

/** A line chart of one or more series (a legend names them when there are several). */
export function drawLineChart(chart: LineChart): RgbImage {
  const all = chart.series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const xs = all.map(([x]) => x);
  const ys = all.map(([, y]) => y);
  let xLo = xs.length === 0 ? 0 : Math.min(...xs);
  let xHi = xs.length === 0 ? 1 : Math.max(...xs);
  if (xHi <= xLo) [xLo, xHi] = [xLo - 1, xHi + 1];
  let yLo = chart.yMin ?? (ys.length === 0 ? 0 : Math.min(...ys));
  let yHi = chart.yMax ?? (ys.length === 0 ? 1 : Math.max(...ys));
  if (yHi <= yLo) [yLo, yHi] = yLo === 0 ? [0, 1] : [yLo - Math.abs(yLo) * 0.1, yHi + Math.abs(yHi) * 0.1];
  const xTicks = niceTicks(xLo, xHi, 6).filter((t) => t >= xLo && t <= xHi);
  const f = frame(chart.title, chart.xLabel, { lo: xLo, hi: xHi, ticks: xTicks }, { lo: yLo, hi: yHi });
  chart.series.forEach((series, i) => {
    const colour = PALETTE[i % PALETTE.length] as Rgb;
    let previous: readonly [number, number] | undefined;
    for (const point of series.points) {
      if (!Number.isFinite(point[0]) || !Number.isFinite(point[1])) {
        previous = undefined;
        continue;
      }
      if (previous !== undefined) drawLine(f.image, f.x(previous[0]), f.y(previous[1]), f.x(point[0]), f.y(point[1]), colour, 2);
      else drawLine(f.image, f.x(point[0]), f.y(point[1]), f.x(point[0]), f.y(point[1]), colour, 4);
      previous = point;
    }
    if (chart.series.length > 1) {
      const lx = PLOT_WIDTH - MARGIN.right - 90;
      const ly = MARGIN.top + 6 + i * 12;
      fillRect(f.image, lx, ly + 2, 12, 3, colour);
      drawText(f.image, series.name, lx + 16, ly, INK);
    }
  });
  return f.image;
}

/**
 * Per-keypoint miss rate as bars, with the part of the misses that are left/right swaps drawn over them in
 * red: the error a top-down model makes when it misjudges which way a person faces.
 */
export function drawKeypointMisses(title: string, keypoints: readonly { name: string; missRate: number; swapRate: number }[]): RgbImage {
  const n = Math.max(1, keypoints.length);
  const worst = Math.max(0, ...keypoints.map((k) => (Number.isFinite(k.missRate) ? k.missRate : 0)));
  const yHi = worst <= 0 ? 1 : Math.min(1, niceTicks(0, worst, 4).find((t) => t >= worst) ?? worst);
  const slot = (PLOT_WIDTH - MARGIN.left - MARGIN.right) / n;
  // Bars sit at slot centres 0.5 … n − 0.5; labels are the keypoints' index (names do not fit under 17 bars).
  const f = frame(title, "keypoint (index in the schema); red: left/right swaps", { lo: 0, hi: n, ticks: keypoints.map((_, i) => i + 0.5), labels: keypoints.map((_, i) => String(i)) }, { lo: 0, hi: yHi });
  keypoints.forEach((k, i) => {
    const miss = Number.isFinite(k.missRate) ? k.missRate : 0;
    const swaps = miss * (Number.isFinite(k.swapRate) ? k.swapRate : 0);
    const x = f.x(i + 0.5) - slot * 0.35;
    const width = Math.max(1, slot * 0.7);
    fillRect(f.image, x, f.y(miss), width, f.y(0) - f.y(miss), PALETTE[0] as Rgb);
    if (swaps > 0) fillRect(f.image, x, f.y(swaps), width, f.y(0) - f.y(swaps), SWAP);
  });
  return f.image;
}

/**
 * The run's plots as PNG files: loss.png and lr.png against the step, ap.png per validated epoch, and
 * keypoint-misses.png of the last validated epoch (when per-keypoint errors were computed).
 */
export async function renderResultPlots(results: RunResults): Promise<{ name: string; png: Uint8Array }[]> {
  const steps = results.steps;
  const validated = results.epochs.filter((row) => row.validation !== undefined);
  const apSeries = (name: string, pick: (v: NonNullable<(typeof validated)[number]["validation"]>) => number): ChartSeries => ({
    name,
    points: validated.map((row) => [row.epoch, pick(row.validation as NonNullable<typeof row.validation>)] as const).filter(([, v]) => v >= 0),
  });
  const images: { name: string; image: RgbImage }[] = [
    { name: "loss.png", image: drawLineChart({ title: "train loss", xLabel: "step", series: [{ name: "loss", points: steps.map((s) => [s.step, s.loss] as const) }] }) },
    { name: "lr.png", image: drawLineChart({ title: "learning rate", xLabel: "step", yMin: 0, series: [{ name: "lr", points: steps.map((s) => [s.step, s.lr] as const) }] }) },
    {
      name: "ap.png",
      image: drawLineChart({
        title: "validation AP",
        xLabel: "epoch",
        yMin: 0,
        yMax: 1,
        series: [apSeries("AP", (v) => v.ap), apSeries("AP50", (v) => v.ap50), apSeries("AP75", (v) => v.ap75), apSeries("AR", (v) => v.ar)],
      }),
    },
  ];
  const misses = results.keypoints;
  if (misses !== undefined && misses.keypoints.length > 0) {
    images.push({ name: "keypoint-misses.png", image: drawKeypointMisses(`keypoint misses, epoch ${misses.epoch}`, misses.keypoints) });
  }
  const plots: { name: string; png: Uint8Array }[] = [];
  for (const { name, image } of images) plots.push({ name, png: await encodePng(image) });
  return plots;
}
