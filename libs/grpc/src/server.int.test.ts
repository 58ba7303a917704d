import { connect } from "node:net";
import { fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Client, connectivityState, credentials, Metadata } from "@grpc/grpc-js";
import { context, SpanKind, trace } from "@opentelemetry/api";
import { AppError, AsyncQueue, Code, sleep } from "@poseloop/core";
import { Health, HealthCheckResponse_ServingStatus } from "@poseloop/proto/grpc/health/v1/health_pb";
import {
  ServerReflection,
  ServerReflectionRequestSchema,
  ServerReflectionResponseSchema,
  type ServerReflectionResponse,
} from "@poseloop/proto/grpc/reflection/v1/reflection_pb";
import {
  InferenceService,
  type StreamKeypointsRequestSchema,
  type StreamKeypointsResponse,
} from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { installTestMetrics, installTestTelemetry } from "@poseloop/telemetry";
import { take } from "@poseloop/testkit";
import { afterEach, describe, expect, it } from "vitest";
import {
  createClient,
  GrpcServer,
  ServingStatus,
  type MethodsOf,
  type ServiceImpl,
} from "@poseloop/grpc";
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";

type InferenceImpl = ServiceImpl<MethodsOf<typeof InferenceService>>;
type RequestInit = MessageInitShape<typeof StreamKeypointsRequestSchema>;

/** Echoes frames as results: enough to exercise the transport, not the inference service itself. */
function echoImpl(overrides: Partial<InferenceImpl> = {}): InferenceImpl {
  return {
    async *streamKeypoints(requests) {
      for await (const request of requests) {
        if (request.payload.case === "frame") {
          yield { payload: { case: "result", value: { frameId: request.payload.value.frameId } } };
        }
      }
    },
    detectKeypoints(request) {
      return { result: { frameId: request.frame?.frameId ?? 0n } };
    },
    getServingModel() {
      throw new AppError(Code.INVALID_ARGUMENT, "bad model name", { problems: ["model_name is empty", "too short"] });
    },
    // eslint-disable-next-line require-yield
    async *watchServingModel() {
      throw new Error("secret failure at /srv/poseloop/internal.ts:42");
    },
    ...overrides,
  };
}

function frameIdOf(response: StreamKeypointsResponse | void): bigint | undefined {
  return response?.payload.case === "result" ? response.payload.value.frameId : undefined;
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function startServer(impl: InferenceImpl, options: ConstructorParameters<typeof GrpcServer>[0] = {}) {
  const server = new GrpcServer(options);
  server.register(InferenceService, impl);
  const { port } = await server.listen("127.0.0.1", 0);
  cleanups.push(() => server.forceShutdown());
  const target = `127.0.0.1:${port}`;
  const client = createClient(InferenceService, target);
  cleanups.push(() => client.$close());
  return { server, client, target };
}

function frames(ids: number[]): AsyncIterable<RequestInit> {
  return (async function* (): AsyncGenerator<RequestInit> {
    yield { payload: { case: "options", value: {} } };
    for (const id of ids) yield { payload: { case: "frame", value: { frameId: BigInt(id) } } };
  })();
}

describe("GrpcServer with generated descriptors", () => {
  it("serves a bidi stream to a grpc-js client over loopback, in order", async () => {
    const { client } = await startServer(echoImpl());
    const ids: bigint[] = [];
    for await (const response of client.streamKeypoints(frames([1, 2, 3, 4, 5]))) {
      if (response.payload.case === "result") ids.push(response.payload.value.frameId);
    }
    expect(ids).toEqual([1n, 2n, 3n, 4n, 5n]);
  });

  it("reports SERVING through grpc.health.v1 Check and streams changes through Watch", async () => {
    const { server, target } = await startServer(echoImpl());
    const health = createClient(Health, target);
    cleanups.push(() => health.$close());
    expect((await health.check({ service: "" })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    expect((await health.check({ service: "poseloop.inference.v1.InferenceService" })).status).toBe(
      HealthCheckResponse_ServingStatus.SERVING,
    );
    await expect(health.check({ service: "nope" })).rejects.toSatisfy((e) => AppError.is(e, Code.NOT_FOUND));

    const controller = new AbortController();
    const watch = health.watch({ service: "" }, { signal: controller.signal })[Symbol.asyncIterator]();
    expect((await watch.next()).value?.status).toBe(ServingStatus.SERVING);
    server.health.setStatus("", ServingStatus.NOT_SERVING);
    expect((await watch.next()).value?.status).toBe(ServingStatus.NOT_SERVING);
    controller.abort();
  });

  it("lists services and serves descriptors through reflection v1 and v1alpha", async () => {
    const { target } = await startServer(echoImpl());
    const reflection = createClient(ServerReflection, target);
    cleanups.push(() => reflection.$close());
    const requests = (async function* () {
      yield { messageRequest: { case: "listServices", value: "" } } as const;
      yield { messageRequest: { case: "fileContainingSymbol", value: "poseloop.inference.v1.InferenceService" } } as const;
    })();
    const [list, files] = await take(reflection.serverReflectionInfo(requests), 2);
    expect(list?.messageResponse.case).toBe("listServicesResponse");
    const names = list?.messageResponse.case === "listServicesResponse" ? list.messageResponse.value.service.map((s) => s.name) : [];
    expect(names).toEqual(
      expect.arrayContaining(["poseloop.inference.v1.InferenceService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"]),
    );
    const protos =
      files?.messageResponse.case === "fileDescriptorResponse"
        ? files.messageResponse.value.fileDescriptorProto.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes).name)
        : [];
    expect(protos[0]).toBe("poseloop/inference/v1/inference.proto");
    expect(protos).toEqual(expect.arrayContaining(["poseloop/common/v1/model.proto", "google/protobuf/timestamp.proto"]));

    // v1alpha, as older grpcurl and Postman call it: same messages under another service name.
    const raw = new Client(target, credentials.createInsecure());
    cleanups.push(() => raw.close());
    const call = raw.makeBidiStreamRequest(
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
      (message: unknown) => Buffer.from(toBinary(ServerReflectionRequestSchema, create(ServerReflectionRequestSchema, message as never))),
      (bytes: Buffer) => fromBinary(ServerReflectionResponseSchema, bytes),
      new Metadata(),
    );
    const first = new Promise<ServerReflectionResponse>((resolve, reject) => {
      call.once("data", resolve);
      call.once("error", reject);
    });
    call.write({ messageRequest: { case: "listServices", value: "" } });
    const alpha = await first;
    call.end();
    expect(alpha.messageResponse.case).toBe("listServicesResponse");
  });

  it("refuses a message above the receive limit with RESOURCE_EXHAUSTED", async () => {
    const { client } = await startServer(echoImpl(), { maxReceiveMessageBytes: 1024 * 1024 });
    const big = new Uint8Array(2 * 1024 * 1024);
    await expect(
      client.detectKeypoints({ frame: { frameId: 1n, image: { case: "encoded", value: { data: big } } } }),
    ).rejects.toSatisfy((e) => AppError.is(e, Code.RESOURCE_EXHAUSTED));
    // The server is still fine afterwards.
    expect((await client.detectKeypoints({ frame: { frameId: 2n } })).result?.frameId).toBe(2n);
  });

  it("sends AppError codes and problems to the client and hides internal errors", async () => {
    const { client } = await startServer(echoImpl());
    const invalid = await client.getServingModel({}).catch((e: unknown) => e);
    expect(AppError.is(invalid, Code.INVALID_ARGUMENT)).toBe(true);
    expect((invalid as AppError).message).toBe("bad model name");
    expect((invalid as AppError).problems).toEqual(["model_name is empty", "too short"]);

    const internal = await take(client.watchServingModel({}), 1).catch((e: unknown) => e);
    expect(AppError.is(internal, Code.INTERNAL)).toBe(true);
    // The ref is the key to the server's log line of the cause.
    expect((internal as AppError).message).toMatch(/^internal error \(ref [0-9a-f]{12}\)$/);
    expect((internal as AppError).message).not.toContain("/srv");
  });

  it("maps a refused connection to UNAVAILABLE", async () => {
    const { server, target } = await startServer(echoImpl());
    server.forceShutdown();
    const client = createClient(InferenceService, target, { defaultTimeoutMs: 5_000 });
    cleanups.push(() => client.$close());
    await expect(client.detectKeypoints({})).rejects.toSatisfy((e) => AppError.is(e, Code.UNAVAILABLE));
  });

  it("applies flow control: a slow reader holds back a fast server stream", async () => {
    let produced = 0;
    const pad = "x".repeat(64 * 1024);
    const { client } = await startServer(
      echoImpl({
        async *watchServingModel(_request, ctx) {
          for (let i = 0; i < 5_000 && !ctx.signal.aborted; i++) {
            produced++;
            yield { serving: { labels: { pad } } };
          }
        },
      }),
    );
    const iterator = client.watchServingModel({})[Symbol.asyncIterator]();
    for (let i = 0; i < 3; i++) await iterator.next();
    await sleep(500);
    // HTTP/2 windows and stream buffers hold a few MiB at most: far fewer than the 5000 messages (320 MiB).
    expect(produced).toBeLessThan(200);
    await iterator.return?.();
  });

  it("carries the caller's trace context to the server span through metadata", async () => {
    const telemetry = installTestTelemetry("grpc-test");
    cleanups.push(() => telemetry.shutdown());
    const { client } = await startServer(echoImpl());
    const tracer = telemetry.tracer();
    const parent = tracer.startSpan("caller");
    await context.with(trace.setSpan(context.active(), parent), () => client.detectKeypoints({ frame: { frameId: 7n } }));
    parent.end();
    const serverSpan = telemetry.spans().find((span) => span.name === "poseloop.inference.v1.InferenceService/DetectKeypoints" && span.kind === SpanKind.SERVER);
    const clientSpan = telemetry.spans().find((span) => span.name === "poseloop.inference.v1.InferenceService/DetectKeypoints" && span.kind === SpanKind.CLIENT);
    expect(serverSpan?.spanContext().traceId).toBe(parent.spanContext().traceId);
    expect(serverSpan?.parentSpanContext?.spanId).toBe(clientSpan?.spanContext().spanId);
    expect(clientSpan?.parentSpanContext?.spanId).toBe(parent.spanContext().spanId);
  });

  it("records rpc.server.call.duration for every call, unary and streaming, with its method and status", async () => {
    const recorded = installTestMetrics();
    cleanups.push(() => recorded.shutdown());
    const { client } = await startServer(echoImpl());
    await client.detectKeypoints({ frame: { frameId: 1n } });
    await client.detectKeypoints({ frame: { frameId: 2n } });
    await expect(client.getServingModel({})).rejects.toThrow();
    const streamed: StreamKeypointsResponse[] = [];
    for await (const response of client.streamKeypoints(frames([1, 2, 3]))) streamed.push(response);
    expect(streamed).toHaveLength(3);
    await expect(take(client.watchServingModel({}), 1)).rejects.toThrow();
    const service = "poseloop.inference.v1.InferenceService";
    const points = await recorded.points("rpc.server.call.duration");
    const byMethod = Object.fromEntries(points.map((point) => [String(point.attributes["rpc.method"]), point]));
    expect(byMethod["DetectKeypoints"]?.attributes).toEqual({ "rpc.system": "grpc", "rpc.service": service, "rpc.method": "DetectKeypoints", "rpc.grpc.status_code": Code.OK });
    expect(byMethod["DetectKeypoints"]?.count).toBe(2);
    expect(byMethod["GetServingModel"]?.attributes["rpc.grpc.status_code"]).toBe(Code.INVALID_ARGUMENT);
    expect(byMethod["StreamKeypoints"]).toMatchObject({ count: 1, attributes: { "rpc.grpc.status_code": Code.OK } });
    expect(byMethod["WatchServingModel"]).toMatchObject({ count: 1, attributes: { "rpc.grpc.status_code": Code.INTERNAL } });
    for (const point of points) expect(point.value).toBeGreaterThan(0);
  });
});

describe("GrpcServer bidi streams and their pending reads", () => {
  /** The next response or error of `responses`, or a note that none came within `ms`. */
  const settle = (next: Promise<IteratorResult<StreamKeypointsResponse>>, ms = 5_000) =>
    Promise.race([
      next.then(
        (result) => (result.done === true ? "ended with OK" : result.value),
        (error: unknown) => error,
      ),
      sleep(ms).then(() => `nothing within ${ms} ms`),
    ]);

  it("sends the status of a handler that fails from another path while its read is pending", async () => {
    // A handler streams results while a read waits for the next request, and a timer of its own (as the
    // inferencer's idle and processing failures do) ends the stream with a status. Node's stream iterator
    // destroyed the call when that status arrived as an 'error' during the pending read, before grpc-js could
    // send it behind the last result: a client keeping its request stream open waited until the server shut down.
    const { client } = await startServer(
      echoImpl({
        async *streamKeypoints(requests) {
          const iterator = requests[Symbol.asyncIterator]();
          await iterator.next();
          let failure: AppError | undefined;
          const timer = setTimeout(() => (failure = new AppError(Code.INVALID_ARGUMENT, "the stream went wrong elsewhere")), 200);
          try {
            const read = iterator.next();
            read.catch(() => undefined);
            for (let id = 1n; ; id++) {
              yield { payload: { case: "result", value: { frameId: id } } };
              // Resumed as soon as gRPC took the result, while it is still being sent.
              if (failure !== undefined) throw failure;
              await sleep(5);
            }
          } finally {
            clearTimeout(timer);
          }
        },
      }),
    );
    const requests = new AsyncQueue<RequestInit>();
    requests.push({ payload: { case: "options", value: {} } });
    const responses = client.streamKeypoints(requests)[Symbol.asyncIterator]();
    try {
      const outcome = await Promise.race([
        (async () => {
          for (;;) {
            const result = await responses.next();
            if (result.done === true) return "ended with OK";
          }
        })().catch((e: unknown) => e),
        sleep(5_000).then(() => "no status within 5 s"),
      ]);
      expect(AppError.is(outcome, Code.INVALID_ARGUMENT), String(outcome)).toBe(true);
      expect((outcome as AppError).message).toBe("the stream went wrong elsewhere");
    } finally {
      requests.close();
    }
  });

  it("sends the status of a handler that fails while a read it started is still pending", async () => {
    const { client } = await startServer(
      echoImpl({
        async *streamKeypoints(requests) {
          const iterator = requests[Symbol.asyncIterator]();
          await iterator.next();
          yield { payload: { case: "result", value: { frameId: 1n } } };
          void iterator.next().catch(() => undefined);
          throw new AppError(Code.FAILED_PRECONDITION, "this stream cannot go on");
        },
      }),
    );
    const requests = new AsyncQueue<RequestInit>();
    requests.push({ payload: { case: "options", value: {} } });
    const responses = client.streamKeypoints(requests)[Symbol.asyncIterator]();
    try {
      expect(frameIdOf((await responses.next()).value)).toBe(1n);
      const outcome = await settle(responses.next());
      expect(AppError.is(outcome, Code.FAILED_PRECONDITION), String(outcome)).toBe(true);
    } finally {
      requests.close();
    }
  });

  it("ends a handler's pending read promptly when the client cancels, and aborts the handler's signal", async () => {
    // A cancel reaches a handler in two steps: HTTP/2 ends the request stream (the read may end as if the client
    // had half-closed), then grpc-js reports 'cancelled' (ctx.signal aborts, a read still waiting fails).
    const reads = new AsyncQueue<{ outcome: string; afterMs: number; cancelled: Promise<unknown> }>();
    const { client } = await startServer(
      echoImpl({
        async *streamKeypoints(requests, ctx) {
          const cancelled = new Promise((resolve) => ctx.signal.addEventListener("abort", () => resolve(ctx.signal.reason), { once: true }));
          const iterator = requests[Symbol.asyncIterator]();
          await iterator.next();
          yield { payload: { case: "result", value: { frameId: 1n } } };
          const started = Date.now();
          const outcome = await iterator.next().then(
            (result) => (result.done === true ? "done" : "a message"),
            (error: unknown) => `${AppError.from(error).code}`,
          );
          reads.push({ outcome, afterMs: Date.now() - started, cancelled });
        },
      }),
    );
    const requests = new AsyncQueue<RequestInit>();
    requests.push({ payload: { case: "options", value: {} } });
    const controller = new AbortController();
    const responses = client.streamKeypoints(requests, { signal: controller.signal })[Symbol.asyncIterator]();
    try {
      expect(frameIdOf((await responses.next()).value)).toBe(1n);
      await sleep(300);
      controller.abort();
      await responses.next().catch(() => undefined);
      const [read] = await Promise.race([take(reads, 1), sleep(5_000).then(() => [])]);
      expect(read, "the pending read did not end within 5 s of the cancel").toBeDefined();
      expect(["done", `${Code.CANCELLED}`]).toContain(read?.outcome);
      expect(read?.afterMs).toBeGreaterThanOrEqual(250);
      const reason = await Promise.race([read?.cancelled, sleep(2_000).then(() => "not aborted within 2 s")]);
      expect(AppError.is(reason, Code.CANCELLED), String(reason)).toBe(true);
    } finally {
      requests.close();
    }
  });

  it("cancels the call when a client that aborted calls next() while responses are buffered", async () => {
    // An aborted reader must stop at once, not hand out what is already buffered: the client ends the call only
    // when its reader ends, so a reader still yielding kept the server's stream (and its slot) open.
    const closed = new AsyncQueue<boolean>();
    const { client } = await startServer(
      echoImpl({
        async *streamKeypoints(requests) {
          try {
            for await (const request of requests) {
              if (request.payload.case === "frame") yield { payload: { case: "result", value: { frameId: request.payload.value.frameId } } };
            }
          } finally {
            closed.push(true);
          }
        },
      }),
    );
    const requests = new AsyncQueue<RequestInit>();
    requests.push({ payload: { case: "options", value: {} } });
    for (let id = 1; id <= 5; id++) requests.push({ payload: { case: "frame", value: { frameId: BigInt(id) } } });
    const controller = new AbortController();
    const responses = client.streamKeypoints(requests, { signal: controller.signal })[Symbol.asyncIterator]();
    try {
      expect(frameIdOf((await responses.next()).value)).toBe(1n);
      await sleep(200); // the other results arrive and wait in the client's buffer
      controller.abort();
      expect(AppError.is(await responses.next().catch((e: unknown) => e), Code.CANCELLED)).toBe(true);
      const [handlerEnded] = await Promise.race([take(closed, 1), sleep(5_000).then(() => [])]);
      expect(handlerEnded, "the server's handler still ran 5 s after the cancel").toBe(true);
    } finally {
      requests.close();
    }
  });

  it("keeps a duplex call open for responses after its handler breaks out of reading", async () => {
    const { client } = await startServer(
      echoImpl({
        async *streamKeypoints(requests) {
          for await (const request of requests) {
            if (request.payload.case === "options") break;
          }
          await sleep(50);
          for (let id = 1n; id <= 3n; id++) yield { payload: { case: "result", value: { frameId: id } } };
        },
      }),
    );
    const requests = new AsyncQueue<RequestInit>();
    requests.push({ payload: { case: "options", value: {} } });
    requests.push({ payload: { case: "frame", value: { frameId: 9n } } });
    try {
      const ids: (bigint | undefined)[] = [];
      for await (const response of client.streamKeypoints(requests)) ids.push(frameIdOf(response));
      expect(ids).toEqual([1n, 2n, 3n]);
    } finally {
      requests.close();
    }
  });
});

describe("GrpcServer.drain", () => {
  it("lets an open stream finish, refuses new calls, and reports a graceful drain", async () => {
    const { server, client, target } = await startServer(echoImpl());
    const requests = new AsyncQueue<RequestInit>();
    requests.push({ payload: { case: "options", value: {} } });
    requests.push({ payload: { case: "frame", value: { frameId: 1n } } });
    const responses = client.streamKeypoints(requests)[Symbol.asyncIterator]();
    expect(frameIdOf((await responses.next()).value)).toBe(1n);

    const drained = server.drain(10_000);
    await sleep(100);
    const late = createClient(InferenceService, target, { defaultTimeoutMs: 2_000 });
    cleanups.push(() => late.$close());
    await expect(late.detectKeypoints({})).rejects.toSatisfy((e) => AppError.is(e, Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED));

    // The open stream still works, then ends normally.
    requests.push({ payload: { case: "frame", value: { frameId: 2n } } });
    expect(frameIdOf((await responses.next()).value)).toBe(2n);
    requests.close();
    expect((await responses.next()).done).toBe(true);
    expect(await drained).toEqual({ forced: false });
  });

  it("cancels streams still open at the timeout", async () => {
    const { server, client } = await startServer(echoImpl());
    const requests = new AsyncQueue<RequestInit>();
    requests.push({ payload: { case: "options", value: {} } });
    requests.push({ payload: { case: "frame", value: { frameId: 1n } } });
    const responses = client.streamKeypoints(requests)[Symbol.asyncIterator]();
    await responses.next();
    const started = Date.now();
    expect(await server.drain(300)).toEqual({ forced: true });
    expect(Date.now() - started).toBeLessThan(3_000);
    const outcome = await responses.next().then(
      (r: IteratorResult<StreamKeypointsResponse>) => r,
      (e: unknown) => e,
    );
    expect(AppError.is(outcome, Code.UNAVAILABLE, Code.CANCELLED, Code.INTERNAL)).toBe(true);
  });
});

describe("GrpcServer connection limits", () => {
  it("closes a connection with no call open for maxConnectionIdleMs; the next call reconnects", async () => {
    const { target, client } = await startServer(echoImpl(), { maxConnectionIdleMs: 300 });
    const raw = new Client(target, credentials.createInsecure());
    cleanups.push(() => raw.close());
    await new Promise<void>((resolve, reject) => raw.waitForReady(Date.now() + 5000, (error) => (error === undefined ? resolve() : reject(error))));
    const channel = raw.getChannel();
    expect(channel.getConnectivityState(false)).toBe(connectivityState.READY);
    const started = Date.now();
    await new Promise<void>((resolve) => channel.watchConnectivityState(connectivityState.READY, Date.now() + 5000, () => resolve()));
    expect(channel.getConnectivityState(false)).not.toBe(connectivityState.READY);
    expect(Date.now() - started).toBeLessThan(3000);
    // Calls after an idle close just open a new connection.
    expect((await client.detectKeypoints({ frame: { frameId: 3n } })).result?.frameId).toBe(3n);
    await sleep(600);
    expect((await client.detectKeypoints({ frame: { frameId: 4n } })).result?.frameId).toBe(4n);
  });

  it("sends GOAWAY to a connection older than maxConnectionAgeMs and closes it after the grace, ending its calls", async () => {
    const { client } = await startServer(echoImpl(), { maxConnectionAgeMs: 300, maxConnectionAgeGraceMs: 300, maxConnectionIdleMs: 0 });
    const started = Date.now();
    const outcome = await (async () => {
      const silent = (async function* (): AsyncGenerator<RequestInit> {
        yield { payload: { case: "options", value: {} } };
        await sleep(10_000);
      })();
      for await (const _ of client.streamKeypoints(silent)) void _;
    })().catch((e: unknown) => e);
    expect(AppError.is(outcome, Code.UNAVAILABLE, Code.CANCELLED, Code.INTERNAL), String(outcome)).toBe(true);
    expect(Date.now() - started).toBeLessThan(3000);
  });

  for (const [what, bytes] of [["sends nothing", ""], ["sends bytes that are not HTTP/2", "GET / HTTP/1.1\r\n\r\n"]] as const) {
    it(`closes a TCP connection that ${what}`, async () => {
      const { server } = await startServer(echoImpl(), { maxConnectionIdleMs: 300 });
      const started = Date.now();
      const socket = connect(server.address?.port ?? 0, "127.0.0.1");
      cleanups.push(() => void socket.destroy());
      socket.on("error", () => undefined);
      socket.on("data", () => undefined);
      socket.on("connect", () => {
        if (bytes !== "") socket.write(bytes);
      });
      await new Promise<void>((resolve) => socket.on("close", () => resolve()));
      expect(Date.now() - started).toBeLessThan(3000);
    });
  }
});
