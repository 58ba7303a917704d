import { describe, expect, it } from "vitest";
import { decodeTrainingState, encodeTrainingState } from "./training-state.js";

describe("decodeTrainingState", () => {
  it("decodes a state handed over as a Node Buffer that shares a larger pool (as stores and sockets return them)", () => {
    const state = { step: 3, microStep: 1, tensors: new Map([["param:a", Float32Array.of(1, 2, 3)], ["param:b", Float32Array.of(-0.5)]]) };
    const encoded = encodeTrainingState(state);
    // A Buffer at an odd offset of a bigger allocation: Buffer#slice would give views of the pool, not copies.
    const pool = Buffer.alloc(encoded.byteLength + 3);
    pool.set(encoded, 3);
    const decoded = decodeTrainingState(pool.subarray(3));
    expect(decoded.step).toBe(3);
    expect(decoded.tensors).toEqual(state.tensors);
  });
});
