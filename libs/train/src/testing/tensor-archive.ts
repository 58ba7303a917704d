import { readFileSync } from "node:fs";

/** A golden-fixture archive written by fixtures/make_goldens.py: named float32 tensors and a JSON meta. */
export interface TensorArchive {
  readonly meta: Record<string, unknown>;
  readonly tensors: ReadonlyMap<string, { shape: number[]; data: Float32Array }>;
}

export function readTensorArchive(path: string): TensorArchive {
  const bytes = readFileSync(path);
  const headerLength = bytes.readUInt32LE(0);
  const header = JSON.parse(bytes.subarray(4, 4 + headerLength).toString("utf8")) as { tensors: [string, number[]][]; meta: Record<string, unknown> };
  let offset = Math.ceil((headerLength + 4) / 4) * 4;
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, shape] of header.tensors) {
    const count = shape.reduce((a, b) => a * b, 1);
    tensors.set(name, { shape, data: new Float32Array(bytes.buffer.slice(bytes.byteOffset + offset, bytes.byteOffset + offset + count * 4)) });
    offset += count * 4;
  }
  return { meta: header.meta, tensors };
}

/** max|actual − expected| / max|expected|, the relative error the golden tests bound. */
export function relativeError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) return Number.POSITIVE_INFINITY;
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < expected.length; i++) {
    diff = Math.max(diff, Math.abs((actual[i] as number) - (expected[i] as number)));
    scale = Math.max(scale, Math.abs(expected[i] as number));
  }
  return scale === 0 ? diff : diff / scale;
}
