import type { GraphBuilder, Value, Dim } from "@poseloop/onnx";
import { ints } from "@poseloop/onnx";

export type ReduceOp = "ReduceSum" | "ReduceMean" | "ReduceSumSquare" | "ReduceL1" | "ReduceMax";

/**
 * A reduction over `axes`, written for the graph's opset: ReduceSum takes its axes as an input from opset 13,
 * the other reductions only from opset 18 (an attribute before).
 */
export function reduce(g: GraphBuilder, op: ReduceOp, x: Value, axes: readonly number[] | undefined, keepdims: boolean, shape?: readonly Dim[]): Value {
  const out = shape === undefined ? {} : { shape };
  const keep = { keepdims: { i: keepdims ? 1 : 0 } };
  if (axes === undefined) return g.op(op, [x], keep, out);
  if (op === "ReduceSum" || g.opset >= 18) return g.op(op, [x, g.int64s(axes)], keep, out);
  return g.op(op, [x], { ...keep, axes: ints(axes) }, out);
}
