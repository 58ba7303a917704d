import { create } from "@bufbuild/protobuf";
import { ModelRegistry, NatsBus, type Bus } from "@poseloop/bus";
import { silentLogger, type Env } from "@poseloop/core";
import { SeededRandom, renderSyntheticScene } from "@poseloop/data";
import { createClient, type ClientControls, type ServiceClient } from "@poseloop/grpc";
import {
  DeliveryMode,
  FrameSchema,
  ImageFormat,
  InferenceService,
  type Frame,
  type StreamKeypointsRequestSchema,
  type StreamOptionsSchema,
} from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { createRgbImage, encodeJpeg, encodePng, fillCapsule, fillCircle } from "@poseloop/vision";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { loadConfig } from "../config.js";
import { startInferencer, type InferencerProcess } from "../inferencer.js";

export type InferenceClient = ServiceClient<(typeof InferenceService)["method"]> & ClientControls;

/** An inferencer on a NATS server, a client to it, and a registry to publish into. */
export interface InferencerHarness {
  readonly inferencer: InferencerProcess;
  readonly client: InferenceClient;
  readonly registry: ModelRegistry;
  readonly publisherBus: Bus;
  readonly modelName: string;
  close(): Promise<void>;
}

export async function startHarness(natsUrl: string, modelName: string, env: Env = {}): Promise<InferencerHarness> {
  const config = loadConfig({
    POSELOOP_INFERENCER_LISTEN: "127.0.0.1:0",
    POSELOOP_NATS_URL: natsUrl,
    POSELOOP_MODEL: modelName,
    POSELOOP_LOG_LEVEL: "error",
    ...env,
  });
  const inferencer = await startInferencer(config, silentLogger);
  const publisherBus = await NatsBus.connect({ servers: natsUrl, name: `publisher-${modelName}`, reconnectTimeWaitMs: 100 });
  const registry = await ModelRegistry.open(publisherBus);
  const client: InferenceClient = createClient(InferenceService, `127.0.0.1:${inferencer.address.port}`);
  return {
    inferencer,
    client,
    registry,
    publisherBus,
    modelName,
    close: async () => {
      client.$close();
      await inferencer.stop();
      await publisherBus.close();
    },
  };
}

/** JPEG frames of synthetic people, rendered once and reused (frame ids differ). */
export async function syntheticJpegs(count: number, width = 192, height = 144, seed = 7): Promise<Uint8Array[]> {
  const random = new SeededRandom(seed);
  const frames: Uint8Array[] = [];
  for (let i = 0; i < count; i++) frames.push(await encodeJpeg(renderSyntheticScene(random, { width, height, minPeople: 1, maxPeople: 1 }).image, 85));
  return frames;
}

/**
 * A PNG of a stick person on a plain background at `width`x`height`: few bytes on the wire, but as many pixels
 * to decode as a camera's 4K frame, so a client can keep the inferencer's queue full of slow decodes.
 */
export async function plainPng(width: number, height: number): Promise<Uint8Array> {
  const image = createRgbImage(width, height, [90, 120, 90]);
  const u = width / 12;
  const v = height / 16;
  fillCircle(image, 6 * u, 2.5 * v, 1.2 * v, [230, 190, 160]);
  fillCapsule(image, 6 * u, 4 * v, 6 * u, 9 * v, 1.2 * v, [200, 40, 40]);
  fillCapsule(image, 6 * u, 9 * v, 5 * u, 15 * v, 0.5 * v, [30, 40, 150]);
  fillCapsule(image, 6 * u, 9 * v, 7 * u, 15 * v, 0.5 * v, [30, 40, 150]);
  return encodePng(image);
}

export function pngFrame(frameId: number, data: Uint8Array): Frame {
  return create(FrameSchema, { frameId: BigInt(frameId), ptsUs: BigInt(Math.round((frameId * 1e6) / 30)), image: { case: "encoded", value: { data, format: ImageFormat.PNG } } });
}

export function jpegFrame(frameId: number, data: Uint8Array): Frame {
  return create(FrameSchema, { frameId: BigInt(frameId), ptsUs: BigInt(Math.round((frameId * 1e6) / 30)), image: { case: "encoded", value: { data, format: ImageFormat.JPEG } } });
}

/** JPEG frames 0..count-1 cycling through `jpegs`, at `fps`, calling `at(i)` before frame i is sent. */
export async function* pacedJpegFrames(jpegs: readonly Uint8Array[], count: number, fps: number, at?: (i: number) => void): AsyncGenerator<Frame> {
  const start = Date.now();
  for (let i = 0; i < count; i++) {
    at?.(i);
    const due = start + (i * 1000) / fps;
    if (due > Date.now()) await new Promise((resolve) => setTimeout(resolve, due - Date.now()));
    yield jpegFrame(i, jpegs[i % jpegs.length] as Uint8Array);
  }
}

type Request = MessageInitShape<typeof StreamKeypointsRequestSchema>;

/** The request stream of StreamKeypoints: options, then the frames `next` yields. */
export async function* streamRequests(options: MessageInitShape<typeof StreamOptionsSchema>, frames: AsyncIterable<Frame> | Iterable<Frame>): AsyncGenerator<Request> {
  yield { payload: { case: "options", value: { delivery: DeliveryMode.EVERY_FRAME, ...options } } };
  for await (const frame of frames) yield { payload: { case: "frame", value: frame } };
}
