/** Shared bits of the benchmarks: timing, medians and a plain table. */

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
