import { PassThrough } from "node:stream";
import { setImmediate as nextTurn } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { AppError, Code } from "@poseloop/core";
import { readStream } from "./streams.js";

/** Runs `body` and returns the unhandled rejections it left behind after a few turns. */
async function unhandledDuring(body: () => Promise<void>): Promise<unknown[]> {
  const unhandled: unknown[] = [];
  const record = (reason: unknown): void => void unhandled.push(reason);
  process.on("unhandledRejection", record);
  try {
    await body();
    for (let i = 0; i < 5; i++) await nextTurn();
    return unhandled;
  } finally {
    process.off("unhandledRejection", record);
  }
}

describe("readStream", () => {
  it("a stream that errors after its reader was aborted (a cancelled grpc-js call) leaves no unhandled rejection", async () => {
    const unhandled = await unhandledDuring(async () => {
      const stream = new PassThrough({ objectMode: true });
      const controller = new AbortController();
      const reader = readStream<number>(stream, controller.signal);
      stream.write(1);
      expect((await reader.next()).value).toBe(1);
      controller.abort();
      expect(AppError.is(await reader.next().catch((e: unknown) => e), Code.CANCELLED)).toBe(true);
      // What grpc-js does on call.cancel(): the stream errors with CANCELLED.
      stream.destroy(new Error("1 CANCELLED: Cancelled on client"));
    });
    expect(unhandled).toEqual([]);
  });

  it("an 'error' emitted while a read is pending fails that read and leaves the stream alive", async () => {
    // A failing grpc-js server handler emits its status as 'error' on the call it reads from; the call must
    // survive it to send that status (Node's own stream iterator destroyed it).
    const stream = new PassThrough({ objectMode: true });
    let finished = false;
    stream.on("finish", () => (finished = true));
    const reader = readStream<number>(stream, new AbortController().signal);
    const pending = reader.next();
    await nextTurn();
    const status = { code: Code.INVALID_ARGUMENT, details: "bad frame" };
    stream.emit("error", status);
    expect(await pending.catch((e: unknown) => e)).toBe(status);
    expect(stream.destroyed).toBe(false);
    stream.end();
    await nextTurn();
    expect(finished).toBe(true);
  });

  it("an abort ends a pending read with the abort reason, without destroying the stream", async () => {
    const stream = new PassThrough({ objectMode: true });
    const controller = new AbortController();
    const reader = readStream<number>(stream, controller.signal);
    const pending = reader.next();
    await nextTurn();
    controller.abort(new AppError(Code.CANCELLED, "call cancelled by the client"));
    const error = await pending.catch((e: unknown) => e);
    expect(AppError.is(error, Code.CANCELLED) && error.message).toBe("call cancelled by the client");
    expect(stream.destroyed).toBe(false);
  });

  it("once aborted, fails the next read even while messages are buffered", async () => {
    // A client's call is cancelled only when its reader ends: a reader still handing out buffered responses
    // kept the call, and what the server held for it, open.
    const stream = new PassThrough({ objectMode: true });
    const controller = new AbortController();
    const reader = readStream<number>(stream, controller.signal);
    for (let i = 1; i <= 3; i++) stream.write(i);
    expect((await reader.next()).value).toBe(1);
    controller.abort();
    expect(AppError.is(await reader.next().catch((e: unknown) => e), Code.CANCELLED)).toBe(true);
  });

  it("delivers the messages buffered before an error, then the error", async () => {
    // A grpc-js client call pushes its last responses, ends, then emits a failed status as 'error'.
    const stream = new PassThrough({ objectMode: true });
    const reader = readStream<number>(stream, new AbortController().signal);
    stream.write(1);
    expect((await reader.next()).value).toBe(1);
    stream.write(2);
    stream.write(3);
    stream.end();
    const status = new Error("9 FAILED_PRECONDITION: stop");
    stream.emit("error", status);
    expect((await reader.next()).value).toBe(2);
    expect((await reader.next()).value).toBe(3);
    expect(await reader.next().catch((e: unknown) => e)).toBe(status);
  });

  it("maps errors with mapError, ends at the end of the stream, and fails on a close before the end", async () => {
    const ended = new PassThrough({ objectMode: true });
    ended.end(7);
    const values: number[] = [];
    for await (const value of readStream<number>(ended, new AbortController().signal)) values.push(value);
    expect(values).toEqual([7]);

    const closed = new PassThrough({ objectMode: true });
    const reader = readStream<number>(closed, new AbortController().signal, (e) => new AppError(Code.UNAVAILABLE, "mapped", { cause: e }));
    const pending = reader.next();
    await nextTurn();
    closed.destroy();
    expect(AppError.is(await pending.catch((e: unknown) => e), Code.UNAVAILABLE)).toBe(true);
  });

  it("breaking out of the loop leaves the stream open and readable, and a later error unheard but handled", async () => {
    const unhandled = await unhandledDuring(async () => {
      const stream = new PassThrough({ objectMode: true });
      stream.write(1);
      stream.write(2);
      for await (const value of readStream<number>(stream, new AbortController().signal)) {
        expect(value).toBe(1);
        break;
      }
      expect(stream.destroyed).toBe(false);
      expect(stream.read()).toBe(2);
      stream.emit("error", new Error("late"));
      stream.write(3);
      expect(stream.read()).toBe(3);
    });
    expect(unhandled).toEqual([]);
  });
});
