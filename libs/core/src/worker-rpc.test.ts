import { afterAll, describe, expect, it } from "vitest";
import { AppError, Code } from "./app-error.js";
import { startModuleWorker, WorkerClient } from "./worker-rpc.js";

const client = new WorkerClient(startModuleWorker(import.meta.url, "./testing/failing-worker"));

afterAll(async () => {
  await client.terminate();
});

describe("WorkerClient", () => {
  it("returns a handler's result", async () => {
    expect(await client.call<number>("echo", 42)).toBe(42);
  });

  it("keeps an AppError's code, message and problems, written for users", async () => {
    const error = await client.call("refused").catch((e: unknown) => e);
    expect(AppError.is(error, Code.INVALID_ARGUMENT)).toBe(true);
    expect((error as AppError).message).toBe("the model has no input named images");
    expect((error as AppError).problems).toEqual(["no input named images"]);
  });

  it("turns any other error into INTERNAL with a generic message, the native text only in the cause", async () => {
    const error = await client.call("native").catch((e: unknown) => e);
    expect(AppError.is(error, Code.INTERNAL)).toBe(true);
    expect((error as AppError).message).toBe("internal error");
    expect((error as AppError).message).not.toMatch(/onnxruntime|\.cc|\//);
    expect(((error as AppError).cause as Error).message).toContain("inference_session.cc:1589");
  });
});
