/**
 * The first maximum of one heatmap plane in row-major order (numpy's argmax), written to `out` as
 * [x, y, value]. Throws a RangeError on NaN: a network that emits NaN is broken, and NaN would otherwise
 * be skipped silently by the comparisons.
 */
export function heatmapMaximum(heatmaps: Float32Array, offset: number, width: number, height: number, out: Float64Array): void {
  let best = -Infinity;
  let bestIndex = 0;
  const size = width * height;
  for (let i = 0; i < size; i++) {
    const v = heatmaps[offset + i] as number;
    if (v > best) {
      best = v;
      bestIndex = i;
    } else if (v !== v) {
      throw new RangeError(`heatmap value at ${offset + i} is NaN`);
    }
  }
  out[0] = bestIndex % width;
  out[1] = Math.floor(bestIndex / width);
  out[2] = best;
}

/** The first maximum of a 1-D vector (a SimCC row), written to `out` as [index, value]; throws on NaN. */
export function vectorMaximum(values: Float32Array, offset: number, length: number, out: Float64Array): void {
  let best = -Infinity;
  let bestIndex = 0;
  for (let i = 0; i < length; i++) {
    const v = values[offset + i] as number;
    if (v > best) {
      best = v;
      bestIndex = i;
    } else if (v !== v) {
      throw new RangeError(`SimCC value at ${offset + i} is NaN`);
    }
  }
  out[0] = bestIndex;
  out[1] = best;
}
