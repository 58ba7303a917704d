/** Shared bits of the benchmarks: timing, medians, a plain table and the loader benchmarks' synthetic set. */
import { generateSyntheticDataset, readCocoKeypoints, type PoseInstance } from "@poseloop/data";

export async function timeMs(fn: () => Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - start) / 1e6;
}

export function printTable(title: string, header: readonly string[], rows: readonly (readonly string[])[]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? "").length)));
  const line = (cells: readonly string[]) => cells.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join("  ");
  process.stdout.write(`\n${title}\n${line(header)}\n${line(widths.map((w) => "-".repeat(w)))}\n`);
  for (const row of rows) process.stdout.write(`${line(row)}\n`);
}

export function fmt(value: number, digits = 2): string {
  return value.toFixed(digits);
}

/** The median (the upper one of an even count); NaN for no values. Does not reorder `values`. */
export function median(values: readonly number[]): number {
  return [...values].sort((x, y) => x - y)[Math.floor(values.length / 2)] ?? Number.NaN;
}

/**
 * Medians of `reps` runs of `a` and of `b`, alternated (a, b, a, b, ...) after one warm-up each, so that drift
 * in the machine or the server (caches, growing stores) weighs on both sides alike.
 */
export async function compareMs(reps: number, a: () => Promise<unknown>, b: () => Promise<unknown>): Promise<[number, number]> {
  await a();
  await b();
  const times: [number[], number[]] = [[], []];
  for (let i = 0; i < reps; i++) {
    times[0].push(await timeMs(a));
    times[1].push(await timeMs(b));
  }
  return [median(times[0]), median(times[1])];
}

/**
 * The loader benchmarks' training set: `count` synthetic 320x240 scenes of 1-3 people (seed 7) written under
 * `dir`, read back as top-down instances; with the number of pictures written.
 */
export async function syntheticTrainSet(dir: string, count: number): Promise<{ images: number; instances: readonly PoseInstance[] }> {
  const dataset = await generateSyntheticDataset({ dir, split: "train", count, width: 320, height: 240, seed: 7, minPeople: 1, maxPeople: 3 });
  const { instances } = await readCocoKeypoints({ dir, split: "train" });
  return { images: dataset.images.length, instances };
}
