/**
 * How far two sets of weights are apart, as the engine-parity tests measure it: per tensor, the largest
 * |a − b| over the tensor's largest |b| (the absolute difference for an all-zero tensor); the worst tensor.
 */
export function worstWeightError(a: ReadonlyMap<string, Float32Array>, b: ReadonlyMap<string, Float32Array>): { name: string; error: number } {
  let worst = { name: "", error: 0 };
  for (const [name, expected] of b) {
    const actual = a.get(name);
    if (actual === undefined || actual.length !== expected.length) return { name, error: Number.POSITIVE_INFINITY };
    let diff = 0;
    let scale = 0;
    for (let i = 0; i < expected.length; i++) {
      diff = Math.max(diff, Math.abs((actual[i] as number) - (expected[i] as number)));
      scale = Math.max(scale, Math.abs(expected[i] as number));
    }
    const error = scale === 0 ? diff : diff / scale;
    if (error > worst.error) worst = { name, error };
  }
  return worst;
}
