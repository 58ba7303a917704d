import { Precision } from "@poseloop/proto/poseloop/common/v1/model_pb";
import { AppError, Code, sleep } from "@poseloop/core";
import { NatsServer, waitFor } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelRegistry, NatsBus, type PublishResult } from "@poseloop/bus";

describe("NATS restart", () => {
  let server: NatsServer;
  beforeAll(async () => {
    server = await NatsServer.start();
  });
  afterAll(async () => server.dispose());

  it("reconnects after the server restarts: a later publication reaches subscribers and watchers", async () => {
    const publisherBus = await NatsBus.connect({ servers: server.url, name: "publisher", reconnectTimeWaitMs: 100 });
    const consumerBus = await NatsBus.connect({ servers: server.url, name: "consumer", reconnectTimeWaitMs: 100 });
    try {
      const publisher = await ModelRegistry.open(publisherBus);
      const consumer = await ModelRegistry.open(consumerBus);
      const controller = new AbortController();
      const events: string[] = [];
      const serving: string[] = [];
      const subscribed = (async () => {
        for await (const { event } of consumer.subscribePublished("restart", controller.signal)) events.push(event.manifest?.model?.version ?? "");
      })().catch(() => undefined);
      const watched = (async () => {
        for await (const entry of consumer.watchServing("restart", controller.signal)) serving.push(entry.record.model?.version ?? "");
      })().catch(() => undefined);
      await sleep(200);

      const publish = (seed: string): Promise<PublishResult> =>
        publisher.publish({
          manifest: { model: { name: "restart" } },
          files: [{ file: "model.onnx", data: Buffer.from(seed), precision: Precision.FP32 }],
          servingFile: "model.onnx",
          promote: true,
          setBy: "test",
        });
      const before = await publish("before");
      await waitFor(() => events.length === 1 && serving.length === 1, { what: "the first publication" });

      await server.restart();

      // JetStream needs a moment after the restart; the client retries while NATS is UNAVAILABLE.
      const after = await waitFor(
        async () => {
          try {
            return await publish("after");
          } catch (error) {
            if (AppError.is(error, Code.UNAVAILABLE, Code.INTERNAL)) return undefined;
            throw error;
          }
        },
        { timeoutMs: 30_000, intervalMs: 250, what: "a publication after the restart" },
      );
      await waitFor(() => events.includes(after.manifest.model?.version ?? "?"), { timeoutMs: 15_000, what: "the event after the restart" });
      await waitFor(() => serving.includes(after.manifest.model?.version ?? "?"), { timeoutMs: 15_000, what: "the serving change after the restart" });
      expect(events[0]).toBe(before.manifest.model?.version);
      expect(serving.at(-1)).toBe(after.manifest.model?.version);
      expect((await consumer.getServing("restart"))?.record.model?.version).toBe(after.manifest.model?.version);
      controller.abort();
      await Promise.all([subscribed, watched]);
    } finally {
      await publisherBus.close();
      await consumerBus.close();
    }
  });
});
