import { AppError, Code } from "@poseloop/core";
import type { FrameOutcome } from "@poseloop/estimator";
import { describe, expect, it } from "vitest";
import { checkWarmUp, modelFailureReason, warmUpFrames } from "./load-check.js";

const timings = { decodeUs: 0, preprocessUs: 0, inferenceUs: 0, postprocessUs: 0 };
const person = (value: number): FrameOutcome => ({ ok: true, width: 96, height: 128, persons: [{ bbox: { x: 0, y: 0, width: 96, height: 128 }, score: 0.5, keypoints: new Float32Array(51).fill(value) }], timings });

function rejection(run: () => void): AppError {
  try {
    run();
  } catch (error) {
    if (error instanceof AppError) return error;
    throw error;
  }
  throw new Error("expected a rejection");
}

describe("the warm-up a version must pass", () => {
  it("is a batch of real-looking frames, one person each, not a blank crop", () => {
    const frames = warmUpFrames({ inputWidth: 48, inputHeight: 64 }, 8);
    expect(frames).toHaveLength(8);
    const first = frames[0]?.image;
    expect(first?.kind).toBe("raw");
    const pixels = first?.kind === "raw" ? first.data : new Uint8Array(0);
    expect(new Set(pixels).size).toBeGreaterThan(50);
    expect(frames.every((f) => f.boxes.length === 0 && !f.flipTest)).toBe(true);
  });

  it("accepts finite keypoints for every frame and rejects NaN, missing people or failed frames as FAILED_PRECONDITION", () => {
    expect(() => checkWarmUp("v1", 2, [person(1), person(2)])).not.toThrow();
    const nan = rejection(() => checkWarmUp("v1", 2, [person(1), person(Number.NaN)]));
    expect(nan.code).toBe(Code.FAILED_PRECONDITION);
    expect(nan.message).toMatch(/batch 2.*not finite/);
    expect(rejection(() => checkWarmUp("v1", 2, [person(1), person(-Infinity)])).message).toMatch(/not finite/);
    expect(rejection(() => checkWarmUp("v1", 2, [person(1)])).message).toMatch(/1 results for 2 frames/);
    expect(rejection(() => checkWarmUp("v1", 1, [{ ok: false, code: Code.INVALID_ARGUMENT, message: "bad crop", timings }])).message).toMatch(/bad crop/);
  });

  it("reports onnxruntime failures without the runtime's source paths", () => {
    const error = new Error("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Non-zero status code returned while running Reshape node. Name:'baked' Status Message: /onnxruntime_src/onnxruntime/core/providers/cpu/tensor/reshape_helper.h:47 onnxruntime::ReshapeHelper::ReshapeHelper(...) input_shape_size == size was false. The input tensor cannot be reshaped to the requested shape.");
    const reason = modelFailureReason(error);
    expect(reason).toMatch(/Reshape node/);
    expect(reason).toMatch(/cannot be reshaped/);
    expect(reason).not.toMatch(/onnxruntime_src|\.h:\d/);
  });
});
