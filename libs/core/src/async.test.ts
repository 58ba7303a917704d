import { setImmediate as nextTurn } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { AppError, AsyncQueue, Code, raceAbort, sleep, withDeadline } from "@poseloop/core";

describe("AsyncQueue", () => {
  it("delivers pushed items in order and ends after close", async () => {
    const queue = new AsyncQueue<number>();
    queue.push(1);
    setTimeout(() => {
      queue.push(2);
      queue.close();
    }, 5);
    const seen: number[] = [];
    for await (const item of queue) seen.push(item);
    expect(seen).toEqual([1, 2]);
    expect(queue.push(3)).toBe(false);
  });

  it("refuses pushes beyond its limit", () => {
    const queue = new AsyncQueue<number>({ limit: 2 });
    expect([queue.push(1), queue.push(2), queue.push(3)]).toEqual([true, true, false]);
  });

  it("ends a waiting consumer with CANCELLED when its signal aborts", async () => {
    const queue = new AsyncQueue<number>();
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 5);
    await expect(queue.next(controller.signal)).rejects.toSatisfy((e) => AppError.is(e, Code.CANCELLED));
  });

  it("rethrows a failure after the queued items", async () => {
    const queue = new AsyncQueue<number>();
    queue.push(1);
    queue.fail(new AppError(Code.DATA_LOSS, "broken"));
    const iterator = queue.iterate();
    expect((await iterator.next()).value).toBe(1);
    await expect(iterator.next()).rejects.toThrow("broken");
  });
});

describe("withDeadline", () => {
  it("rejects with DEADLINE_EXCEEDED naming the operation", async () => {
    await expect(withDeadline(sleep(1000), 10, "the slow thing")).rejects.toSatisfy(
      (e) => AppError.is(e, Code.DEADLINE_EXCEEDED) && e.message.includes("the slow thing"),
    );
  });
});

describe("AppError.from", () => {
  it("maps Node system errors without leaking paths", () => {
    const refused = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:4222"), { code: "ECONNREFUSED" });
    expect(AppError.from(refused).code).toBe(Code.UNAVAILABLE);
    const missing = Object.assign(new Error("ENOENT: no such file, open '/secret/path'"), { code: "ENOENT" });
    const mapped = AppError.from(missing);
    expect(mapped.code).toBe(Code.NOT_FOUND);
    expect(mapped.message).not.toContain("/secret/path");
    expect(mapped.cause).toBe(missing);
  });

  it("turns unknown errors into INTERNAL with a generic message", () => {
    const mapped = AppError.from(new TypeError("x is undefined at /app/src/file.ts:12"));
    expect(mapped.code).toBe(Code.INTERNAL);
    expect(mapped.message).toBe("internal error");
  });

  it("maps aborts and timeouts", () => {
    expect(AppError.from(new DOMException("aborted", "AbortError")).code).toBe(Code.CANCELLED);
    expect(AppError.from(new DOMException("timeout", "TimeoutError")).code).toBe(Code.DEADLINE_EXCEEDED);
  });
});

describe("raceAbort", () => {
  it("rejects at once when already aborted, and the raced promise's later rejection is not left unhandled", async () => {
    const unhandled: unknown[] = [];
    const record = (reason: unknown): void => void unhandled.push(reason);
    process.on("unhandledRejection", record);
    try {
      const controller = new AbortController();
      controller.abort();
      let fail!: (error: Error) => void;
      const pending = new Promise<never>((_, reject) => (fail = reject));
      const error = await raceAbort(pending, controller.signal).catch((e: unknown) => e);
      expect(AppError.is(error, Code.CANCELLED)).toBe(true);
      fail(new Error("late"));
      for (let i = 0; i < 5; i++) await nextTurn();
      expect(unhandled).toEqual([]);
    } finally {
      process.off("unhandledRejection", record);
    }
  });

  it("rejects with the abort reason when the signal aborts first, and resolves with the value otherwise", async () => {
    const controller = new AbortController();
    const slow = new Promise<number>((resolve) => setTimeout(() => resolve(1), 1_000));
    setTimeout(() => controller.abort(), 5);
    expect(AppError.is(await raceAbort(slow, controller.signal).catch((e: unknown) => e), Code.CANCELLED)).toBe(true);
    expect(await raceAbort(Promise.resolve(2), new AbortController().signal)).toBe(2);
  });
});
