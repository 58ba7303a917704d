import { encodePng } from "@poseloop/vision";
import type { Sweep } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { drawLineChart, type ChartSeries } from "../runner/results-plots.js";

/** A file name from a key: "ap-vs-train.lr.png". */
const fileName = (key: string): string => `ap-vs-${key.toLowerCase().replace(/[^a-z0-9._-]+/g, "_")}.png`;

/**
 * Best AP against each swept key's values, a dot per trial that reported an AP (dots, not a line: trials of a
 * grid share values of one key and differ in the others). Positive numbers spanning more than a factor of 10
 * (learning rates) go on a log10 axis; values that are not numbers take their place in the order given.
 */
export async function renderSweepPlots(sweep: Sweep): Promise<{ name: string; png: Uint8Array }[]> {
  const plots: { name: string; png: Uint8Array }[] = [];
  for (const stage of sweep.stages) {
    for (const parameter of stage.parameters) {
      const numbers = parameter.values.map(Number);
      const numeric = numbers.every((n) => Number.isFinite(n));
      const logScale = numeric && numbers.every((n) => n > 0) && Math.max(...numbers) / Math.min(...numbers) > 10;
      const xOf = (value: string): number => (!numeric ? parameter.values.indexOf(value) : logScale ? Math.log10(Number(value)) : Number(value));
      const points: (readonly [number, number])[] = [];
      for (const trial of sweep.trials) {
        const value = trial.values[parameter.key];
        if (value === undefined || trial.aps.length === 0) continue;
        // A gap between points: each is drawn as a dot of its own.
        points.push([xOf(value), trial.bestAp], [Number.NaN, Number.NaN]);
      }
      const series: ChartSeries[] = [{ name: parameter.key, points }];
      const xLabel = logScale ? `log10(${parameter.key})` : numeric ? parameter.key : `${parameter.key}: ${parameter.values.map((v, i) => `${i}=${v}`).join(", ")}`;
      const image = drawLineChart({ title: `best AP vs ${parameter.key}`, xLabel, series, yMin: 0 });
      plots.push({ name: fileName(parameter.key), png: await encodePng(image) });
    }
  }
  return plots;
}
