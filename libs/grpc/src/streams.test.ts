import { PassThrough } from "node:stream";
import { setImmediate as nextTurn } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { AppError, Code } from "@poseloop/core";
import { readStream } from "./streams.js";

describe("readStream", () => {
  it("a stream that errors after its reader was aborted (a cancelled grpc-js call) leaves no unhandled rejection", async () => {
    const unhandled: unknown[] = [];
    const record = (reason: unknown): void => void unhandled.push(reason);
    process.on("unhandledRejection", record);
    try {
      const stream = new PassThrough({ objectMode: true });
      const controller = new AbortController();
      const reader = readStream<number>(stream, controller.signal);
      stream.write(1);
      expect((await reader.next()).value).toBe(1);
      controller.abort();
      expect(AppError.is(await reader.next().catch((e: unknown) => e), Code.CANCELLED)).toBe(true);
      // What grpc-js does on call.cancel(): the stream errors with CANCELLED.
      stream.destroy(new Error("1 CANCELLED: Cancelled on client"));
      for (let i = 0; i < 5; i++) await nextTurn();
      expect(unhandled).toEqual([]);
    } finally {
      process.off("unhandledRejection", record);
    }
  });
});
