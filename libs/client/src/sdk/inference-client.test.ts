import { AppError, Code, sleep } from "@poseloop/core";
import { afterEach, describe, expect, it } from "vitest";
import { startFakeInferencer, type FakeServer } from "../testing/fake-services.js";
import type { FrameInput } from "./frame-input.js";
import { InferenceClient } from "./inference-client.js";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function setup(script: Parameters<typeof startFakeInferencer>[0] = {}, token?: string): Promise<{ server: FakeServer; client: InferenceClient }> {
  const server = await startFakeInferencer(script);
  cleanups.push(() => server.stop());
  const client = new InferenceClient({ address: server.address, ...(token === undefined ? {} : { token }) });
  cleanups.push(() => client.close());
  return { server, client };
}

const pixels = new Uint8Array(8 * 6 * 3);

async function* frames(count: number, pulled: { count: number }): AsyncGenerator<FrameInput> {
  for (let i = 0; i < count; i++) {
    pulled.count++;
    yield { raw: { width: 8, height: 6, data: pixels } };
  }
}

describe("InferenceClient.streamKeypoints", () => {
  it("sends the options first, numbers frames 1, 2, 3... and yields one result per frame in order", async () => {
    const { client, server } = await setup({}, "tok");
    const ids: bigint[] = [];
    let accepted = 0;
    for await (const response of client.streamKeypoints({ streamName: "cam-1", tracking: { metric: "oks" }, maxInFlight: 4 }, frames(5, { count: 0 }))) {
      if (response.payload.case === "accepted") accepted++;
      if (response.payload.case === "result") ids.push(response.payload.value.frameId);
    }
    expect(accepted).toBe(1);
    expect(ids).toEqual([1n, 2n, 3n, 4n, 5n]);
    const call = server.calls.find((c) => c.method === "streamKeypoints")!;
    expect(call.headers["authorization"]).toBe("Bearer tok");
    const request = call.request as { payload: { case: string; value: { streamName: string; maxInFlight: number; tracking?: { enabled: boolean; metric: number } } } };
    expect(request.payload.case).toBe("options");
    expect(request.payload.value).toMatchObject({ streamName: "cam-1", maxInFlight: 4, tracking: { enabled: true, metric: 2 } });
  });

  it("reads no further ahead of the answers than its window while the consumer is slow", async () => {
    const { client } = await setup();
    const pulled = { count: 0 };
    const iterator = client.streamKeypoints({ window: 3 }, frames(1000, pulled))[Symbol.asyncIterator]();
    await iterator.next(); // accepted
    await iterator.next(); // frame 1
    await sleep(300);
    // 1 answered and read, at most 3 more sent, plus the one the pump holds: nowhere near 1000.
    expect(pulled.count).toBeLessThanOrEqual(5);
    for (let i = 0; i < 5; i++) await iterator.next();
    await sleep(100);
    expect(pulled.count).toBeLessThanOrEqual(10);
    await iterator.return?.();
  });

  it("ends with the frame source's own error, not a cancellation", async () => {
    const { client } = await setup();
    async function* failing(): AsyncGenerator<FrameInput> {
      yield { raw: { width: 8, height: 6, data: pixels } };
      throw new AppError(Code.INVALID_ARGUMENT, "clip.mp4: corrupt frame");
    }
    const error = await (async () => {
      for await (const _ of client.streamKeypoints({}, failing()));
    })().catch((e: unknown) => e);
    expect(AppError.is(error, Code.INVALID_ARGUMENT)).toBe(true);
    expect((error as AppError).message).toBe("clip.mp4: corrupt frame");
  });

  it("stops the stream when the consumer breaks out", async () => {
    let read = 0;
    const { client } = await setup({ onFrameRead: () => read++ });
    const pulled = { count: 0 };
    for await (const response of client.streamKeypoints({ window: 2 }, frames(1000, pulled))) {
      if (response.payload.case === "result") break;
    }
    await sleep(100);
    expect(pulled.count).toBeLessThan(10);
    expect(read).toBeLessThan(10);
  });

  it("names the inferencer when it cannot be reached", async () => {
    const { server } = await setup();
    await server.stop();
    const client = new InferenceClient({ address: server.address, defaultTimeoutMs: 2000 });
    cleanups.push(() => client.close());
    const error = await client.getServingModel().catch((e: unknown) => e);
    expect(AppError.is(error, Code.UNAVAILABLE)).toBe(true);
    expect((error as AppError).message).toContain(`the inferencer at ${server.address} is unavailable`);
  });
});

describe("InferenceClient unary calls", () => {
  it("detects keypoints in encoded bytes, sending their format", async () => {
    const { client, server } = await setup();
    const png = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0]);
    const result = await client.detect(png, { maxPersons: 2 });
    expect(result.persons).toHaveLength(1);
    expect(result.persons[0]?.keypoints).toHaveLength(17);
    const request = server.calls.find((c) => c.method === "detectKeypoints")!.request as { maxPersons: number; frame: { image: { case: string; value: { format: number } } } };
    expect(request.maxPersons).toBe(2);
    expect(request.frame.image).toMatchObject({ case: "encoded", value: { format: 2 } });
  });
});
