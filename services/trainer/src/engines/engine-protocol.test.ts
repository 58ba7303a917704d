import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { AppError, Code } from "@poseloop/core";
import { encodeMessageBytes, FrameDecoder, parseEngineJson, readFrames, type EngineFrame } from "./engine-protocol.js";

const line = (value: unknown): Buffer => Buffer.from(`${JSON.stringify(value)}\n`);

function decodeAll(bytes: Uint8Array, chunkSize = bytes.byteLength): EngineFrame[] {
  const decoder = new FrameDecoder();
  const frames: EngineFrame[] = [];
  for (let i = 0; i < bytes.byteLength; i += chunkSize) frames.push(...decoder.push(bytes.subarray(i, i + chunkSize)));
  decoder.end();
  return frames;
}

function protocolFailure(run: () => unknown): AppError {
  try {
    run();
  } catch (error) {
    if (error instanceof AppError) return error;
    throw error;
  }
  throw new Error("expected a protocol error");
}

describe("engine protocol framing", () => {
  it("round-trips messages and their float32 tensors, whatever the chunking", () => {
    const weight = Float32Array.from({ length: 24 }, (_, i) => i * 0.5 - 3);
    const bias = Float32Array.of(1.5, Number.NaN, -0);
    const bytes = Buffer.concat([
      encodeMessageBytes({ type: "ok", id: 1 }),
      encodeMessageBytes({ type: "weights", id: 2 }, [
        { name: "param:conv.weight", shape: [2, 3, 2, 2], data: weight },
        { name: "param:conv.bias", shape: [3], data: bias },
      ]),
      encodeMessageBytes({ type: "bye", id: 3 }),
    ]);
    for (const chunkSize of [1, 3, 7, 64, bytes.byteLength]) {
      const frames = decodeAll(bytes, chunkSize);
      expect(frames.map((f) => f.message.type)).toEqual(["ok", "weights", "bye"]);
      const tensors = frames[1]?.tensors;
      expect([...(tensors?.keys() ?? [])]).toEqual(["param:conv.weight", "param:conv.bias"]);
      expect(tensors?.get("param:conv.weight")).toEqual(weight);
      const b = tensors?.get("param:conv.bias");
      expect(b?.[0]).toBe(1.5);
      expect(Number.isNaN(b?.[1])).toBe(true);
      expect(Object.is(b?.[2], -0)).toBe(true);
    }
  });

  it("writes tensors as little-endian float32 right after the line", () => {
    const bytes = encodeMessageBytes({ type: "step", id: 4, lr: 0.1 }, [{ name: "target_weights", shape: [1, 2], data: Float32Array.of(1, 0.5) }]);
    const newline = bytes.indexOf(10);
    expect(JSON.parse(bytes.subarray(0, newline).toString())).toEqual({ type: "step", id: 4, lr: 0.1, payload: [["target_weights", "f32", [1, 2]]] });
    expect([...bytes.subarray(newline + 1)]).toEqual([0, 0, 0x80, 0x3f, 0, 0, 0, 0x3f]);
  });

  it("refuses a tensor whose length does not match its shape", () => {
    expect(() => encodeMessageBytes({ type: "step", id: 1 }, [{ name: "images", shape: [1, 3, 2, 2], data: new Float32Array(11) }])).toThrow(
      expect.objectContaining({ code: Code.INVALID_ARGUMENT, message: "images: expected 12 values for [1, 3, 2, 2], got 11" }),
    );
  });

  it("reads the NaN and Infinity Python's json writes for a diverged loss", () => {
    const frames = decodeAll(Buffer.from('{"type":"step_result","id":1,"loss":NaN,"gradNorm":Infinity,"x":-Infinity,"note":"NaN stays text"}\n'));
    const message = frames[0]?.message;
    expect(Number.isNaN(message?.loss)).toBe(true);
    expect(message?.gradNorm).toBe(Number.POSITIVE_INFINITY);
    expect(message?.x).toBe(Number.NEGATIVE_INFINITY);
    expect(message?.note).toBe("NaN stays text");
    expect(parseEngineJson('{"a":"say \\"NaN\\"","b":NaN}')).toEqual({ a: 'say "NaN"', b: Number.NaN });
  });

  it("fails on a line that is not JSON, quoting its first 80 characters", () => {
    const garbage = `Downloading weights... ${"=".repeat(100)}\n`;
    const error = protocolFailure(() => decodeAll(Buffer.from(garbage)));
    expect(error.code).toBe(Code.INTERNAL);
    expect(error.message).toBe(`the pytorch engine broke its protocol: ${JSON.stringify(garbage.slice(0, 80))}`);
  });

  it("fails on JSON that is not a message of a known type", () => {
    expect(protocolFailure(() => decodeAll(line({ type: "gossip", id: 1 }))).message).toContain('unknown type: "{\\"type\\":\\"gossip\\"');
    expect(protocolFailure(() => decodeAll(line([1, 2]))).message).toContain("broke its protocol");
    expect(protocolFailure(() => decodeAll(line({ id: 1 }))).message).toContain("unknown type");
    expect(protocolFailure(() => decodeAll(line({ type: "ok", id: 1.5 }))).message).toContain("non-integer id");
    expect(protocolFailure(() => decodeAll(line({ type: "weights", id: 1, payload: [["w", "f16", [2]]] }))).message).toContain("invalid payload list");
  });

  it("fails when the stream ends before the announced tensor bytes", () => {
    const full = encodeMessageBytes({ type: "weights", id: 1 }, [{ name: "param:w", shape: [4], data: new Float32Array(4) }]);
    const error = protocolFailure(() => decodeAll(full.subarray(0, full.byteLength - 5)));
    expect(error.message).toBe("the pytorch engine broke its protocol: the weights message announced 16 bytes of tensors, the stream ended after 11");
  });

  it("fails when the stream ends inside a line", () => {
    expect(protocolFailure(() => decodeAll(Buffer.from('{"type":"ok"'))).message).toBe('the pytorch engine broke its protocol: the stream ended inside a line: "{\\"type\\":\\"ok\\""');
  });

  it("fails on a line over the maximum length without waiting for its end", () => {
    const decoder = new FrameDecoder({ maxLineBytes: 100 });
    expect(decoder.push(Buffer.from("x".repeat(60)))).toEqual([]);
    const error = protocolFailure(() => decoder.push(Buffer.from("y".repeat(60))));
    expect(error.message).toBe(`the pytorch engine broke its protocol: a line longer than 100 bytes: ${JSON.stringify("x".repeat(60) + "y".repeat(20))}`);
  });

  it("reads frames from a stream", async () => {
    const stream = Readable.from([line({ type: "hello", protocol: 1 }).subarray(0, 5), line({ type: "hello", protocol: 1 }).subarray(5), line({ type: "bye", id: 9 })]);
    const types: string[] = [];
    for await (const frame of readFrames(stream)) types.push(frame.message.type);
    expect(types).toEqual(["hello", "bye"]);
  });
});
