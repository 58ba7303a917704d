import type { Dim } from "@poseloop/onnx";
import { AppError, Code } from "@poseloop/core";

/** A dimension that must be a number (training graphs have static shapes). */
export function num(dim: Dim | undefined, what = "dimension"): number {
  if (typeof dim !== "number") throw new AppError(Code.INTERNAL, `${what} must be static, got ${String(dim)}`);
  return dim;
}

export function nums(shape: readonly Dim[], what = "shape"): number[] {
  return shape.map((dim) => num(dim, what));
}

export function sameShape(a: readonly Dim[], b: readonly Dim[]): boolean {
  return a.length === b.length && a.every((dim, i) => dim === b[i]);
}

/** The shape two operands broadcast to (numpy rules). */
export function broadcastShape(a: readonly Dim[], b: readonly Dim[]): Dim[] {
  const rank = Math.max(a.length, b.length);
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    const x = a[a.length - rank + i] ?? 1;
    const y = b[b.length - rank + i] ?? 1;
    if (x === 1) out.push(y);
    else if (y === 1 || x === y) out.push(x);
    else throw new AppError(Code.INTERNAL, `shapes [${a.join(", ")}] and [${b.join(", ")}] do not broadcast`);
  }
  return out;
}

/** Output size of a convolution or pooling window along one axis. */
export function windowOutput(size: number, kernel: number, stride: number, padBegin: number, padEnd: number, dilation = 1, ceil = false): number {
  const span = size + padBegin + padEnd - dilation * (kernel - 1) - 1;
  return (ceil ? Math.ceil(span / stride) : Math.floor(span / stride)) + 1;
}
