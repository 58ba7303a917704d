import * as ort from "onnxruntime-node";
import { encodeModel, GraphBuilder } from "@poseloop/onnx";
import { NCHWC } from "../ops/conv.js";

const CHANNELS = 64;
const POSITIONS = 2;

let probed: Promise<number | undefined> | undefined;

/**
 * The channel block of onnxruntime's blocked-layout (NCHWc) CPU convolution kernels on this machine (MLAS
 * picks it from the CPU: 16 with AVX-512, 8 with AVX2), or undefined where this onnxruntime build has no such
 * kernels. Read off the provider itself, once per thread: ReorderInput of a [1, 64, 1, 2] tensor holding
 * 0, 1, 2, ... must come back as [1, 64/B, 1, 2, B] for some block B > 1.
 */
export function nchwcBlockSize(): Promise<number | undefined> {
  probed ??= probe();
  return probed;
}

async function probe(): Promise<number | undefined> {
  const g = new GraphBuilder({ name: "nchwc_probe", producer: "poseloop-train" });
  const x = g.input("x", "float32", [1, CHANNELS, 1, POSITIONS]);
  g.output(g.op("ReorderInput", [x], {}, { domain: NCHWC }), "y");
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(encodeModel(g.build()), { graphOptimizationLevel: "disabled" });
  } catch {
    // A build without the blocked kernels does not register the op: the graphs keep standard convolutions.
    return undefined;
  }
  try {
    const values = Float32Array.from({ length: CHANNELS * POSITIONS }, (_, i) => i);
    const out = (await session.run({ x: new ort.Tensor("float32", values, [1, CHANNELS, 1, POSITIONS]) }))["y"]?.data as Float32Array;
    // Channel 0 at the second position (value 1) comes right after the first block of channels.
    const block = out.indexOf(1);
    return block > 1 && CHANNELS % block === 0 && isBlocked(out, block) ? block : undefined;
  } finally {
    await session.release();
  }
}

function isBlocked(out: Float32Array, block: number): boolean {
  return out.every((value, i) => {
    const chunk = Math.floor(i / (block * POSITIONS));
    const within = i % (block * POSITIONS);
    const channel = chunk * block + (within % block);
    return value === channel * POSITIONS + Math.floor(within / block);
  });
}
