/**
 * Bidirectional streaming through libs/grpc (typed handlers, async iterables, flow control, a span per
 * call) against raw @grpc/grpc-js with the same protobuf-es serializers, in the same run: frames echoed as
 * results, small (1 KiB) and JPEG-sized (100 KiB).
 */
import { create } from "@bufbuild/protobuf";
import { Client, credentials, Metadata, Server, ServerCredentials, type ServerDuplexStream } from "@grpc/grpc-js";
import { createClient, GrpcServer, toServiceDefinition } from "@poseloop/grpc";
import {
  InferenceService,
  StreamKeypointsResponseSchema,
  type StreamKeypointsRequest,
  type StreamKeypointsResponse,
} from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { compareMs, fmt, printTable } from "./harness.js";

function frame(id: number, payload: Uint8Array) {
  return { payload: { case: "frame" as const, value: { frameId: BigInt(id), image: { case: "encoded" as const, value: { data: payload } } } } };
}

function result(request: StreamKeypointsRequest): StreamKeypointsResponse {
  const id = request.payload.case === "frame" ? request.payload.value.frameId : 0n;
  return create(StreamKeypointsResponseSchema, { payload: { case: "result", value: { frameId: id } } });
}

async function ours(count: number, payload: Uint8Array): Promise<void> {
  const server = new GrpcServer({ reflection: false, health: false });
  server.register(InferenceService, {
    async *streamKeypoints(requests) {
      for await (const request of requests) yield result(request);
    },
    detectKeypoints: () => ({}),
    getServingModel: () => ({}),
    async *watchServingModel() {},
  });
  const { port } = await server.listen("127.0.0.1", 0);
  const client = createClient(InferenceService, `127.0.0.1:${port}`);
  const requests = (async function* () {
    for (let i = 0; i < count; i++) yield frame(i, payload);
  })();
  let received = 0;
  for await (const _ of client.streamKeypoints(requests)) received++;
  client.$close();
  server.forceShutdown();
  if (received !== count) throw new Error(`received ${received} of ${count}`);
}

async function raw(count: number, payload: Uint8Array): Promise<void> {
  const definition = toServiceDefinition(InferenceService);
  const server = new Server();
  server.addService(definition, {
    streamKeypoints: (call: ServerDuplexStream<StreamKeypointsRequest, StreamKeypointsResponse>) => {
      call.on("data", (request: StreamKeypointsRequest) => call.write(result(request)));
      call.on("end", () => call.end());
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  const client = new Client(`127.0.0.1:${port}`, credentials.createInsecure());
  const method = definition["streamKeypoints"];
  if (method === undefined) throw new Error("no method");
  const call = client.makeBidiStreamRequest(method.path, method.requestSerialize, method.responseDeserialize, new Metadata());
  let received = 0;
  const done = new Promise<void>((resolve, reject) => {
    call.on("data", () => received++);
    call.on("end", resolve);
    call.on("error", reject);
  });
  for (let i = 0; i < count; i++) {
    if (!call.write(create(InferenceService.method.streamKeypoints.input, frame(i, payload)))) {
      await new Promise((resolve) => call.once("drain", resolve));
    }
  }
  call.end();
  await done;
  client.close();
  server.forceShutdown();
  if (received !== count) throw new Error(`received ${received} of ${count}`);
}

export async function run(): Promise<void> {
  const rows: string[][] = [];
  for (const [label, count, size] of [
    ["1 KiB frames", 20_000, 1024],
    ["100 KiB frames", 2_000, 100 * 1024],
  ] as const) {
    const payload = new Uint8Array(size).fill(7);
    const [oursMs, rawMs] = await compareMs(3, () => ours(count, payload), () => raw(count, payload));
    rows.push([label, fmt(count / (oursMs / 1000), 0), fmt(count / (rawMs / 1000), 0), fmt(rawMs / oursMs)]);
  }
  printTable(
    "gRPC bidi echo over loopback, median of 3 alternated (peer: raw @grpc/grpc-js streams, same serializers)",
    ["frames", "PoseLoop frames/s", "raw frames/s", "speed vs raw"],
    rows,
  );
}
