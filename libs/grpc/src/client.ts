import { create, type DescMethod, type DescService } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import {
  Client,
  credentials as grpcCredentials,
  Metadata,
  type CallOptions as GrpcCallOptions,
  type ChannelCredentials,
  type ClientDuplexStream,
  type ClientReadableStream,
  type ServiceError,
} from "@grpc/grpc-js";
import type { Writable } from "node:stream";
import { context as otelContext, SpanKind, trace } from "@opentelemetry/api";
import { AppError, Code } from "@poseloop/core";
import { injectIntoMetadata, recordError } from "@poseloop/telemetry";
import type { CallOptions, ServiceClient } from "./handler-types.js";
import { deserializer, methodPath, serializer } from "./service-definition.js";
import { fromServiceError } from "./status.js";
import { readStream, writeAll } from "./streams.js";

export interface ClientOptions {
  /** Default insecure (plaintext HTTP/2). */
  credentials?: ChannelCredentials;
  /** Deadline of unary calls without their own timeoutMs. Default 30 s. */
  defaultTimeoutMs?: number;
  /** Largest response accepted. Default 16 MiB. */
  maxReceiveMessageBytes?: number;
  /** Largest request sent; larger ones fail locally with RESOURCE_EXHAUSTED. Default 16 MiB. */
  maxSendMessageBytes?: number;
  /** Keepalive pings while calls are open. Default 30 s, 10 s ack timeout. */
  keepaliveTimeMs?: number;
  keepaliveTimeoutMs?: number;
  /** A CLIENT span per call, its context sent in the request metadata. Default true. */
  tracing?: boolean;
}

/** A client's connection controls, beside its methods (named with $ so no RPC can collide). */
export interface ClientControls {
  /** Waits until the channel is connected, or fails with UNAVAILABLE after `timeoutMs`. */
  $waitForReady(timeoutMs: number): Promise<void>;
  /** Closes the channel; open calls are cancelled. */
  $close(): void;
}

/**
 * A typed client for `service` at `target` ("host:port"): unary calls return promises, streams are async
 * iterables both ways with gRPC flow control, errors are AppErrors with the server's code and message.
 */
export function createClient<S extends GenServiceMethods>(
  service: GenService<S>,
  target: string,
  options: ClientOptions = {},
): ServiceClient<S> & ClientControls {
  const desc = service as unknown as DescService;
  const client = new Client(target, options.credentials ?? grpcCredentials.createInsecure(), {
    "grpc.max_receive_message_length": options.maxReceiveMessageBytes ?? 16 * 1024 * 1024,
    "grpc.max_send_message_length": options.maxSendMessageBytes ?? 16 * 1024 * 1024,
    "grpc.keepalive_time_ms": options.keepaliveTimeMs ?? 30_000,
    "grpc.keepalive_timeout_ms": options.keepaliveTimeoutMs ?? 10_000,
  });
  const caller = new Caller(client, options);
  const methods: Record<string, unknown> = {};
  for (const method of desc.methods) methods[method.localName] = caller.method(method);
  const controls: ClientControls = {
    $waitForReady: (timeoutMs) =>
      new Promise((resolve, reject) => {
        client.waitForReady(Date.now() + timeoutMs, (error) => {
          if (error === undefined || error === null) resolve();
          else reject(new AppError(Code.UNAVAILABLE, `${target} not reachable within ${timeoutMs} ms`, { cause: error }));
        });
      }),
    $close: () => client.close(),
  };
  return Object.assign(methods, controls) as ServiceClient<S> & ClientControls;
}

class Caller {
  readonly #client: Client;
  readonly #options: ClientOptions;

  constructor(client: Client, options: ClientOptions) {
    this.#client = client;
    this.#options = options;
  }

  method(method: DescMethod): unknown {
    const path = methodPath(method.parent.typeName, method.name);
    const serialize = serializer(method.input);
    const deserialize = deserializer(method.output);
    const toRequest = (init: unknown): never => create(method.input, init as never) as never;
    const client = this.#client;
    switch (method.methodKind) {
      case "unary":
        return (request: unknown, options: CallOptions = {}) =>
          this.#traced(method, options, true, (metadata, callOptions) =>
            new Promise((resolve, reject) => {
              const call = client.makeUnaryRequest(path, serialize, deserialize, toRequest(request), metadata, callOptions, (error, response) => {
                if (error !== null) reject(fromServiceError(error));
                else resolve(response);
              });
              onAbort(options.signal, () => call.cancel());
            }),
          );
      case "client_streaming":
        return (requests: AsyncIterable<unknown>, options: CallOptions = {}) =>
          this.#traced(method, options, false, (metadata, callOptions) =>
            new Promise((resolve, reject) => {
              const pump = linkedController(options.signal);
              let sourceError: unknown;
              const call = client.makeClientStreamRequest(path, serialize, deserialize, metadata, callOptions, (error, value) => {
                pump.abort();
                if (sourceError !== undefined) reject(AppError.from(sourceError));
                else if (error !== null) reject(fromServiceError(error));
                else resolve(value);
              });
              onAbort(options.signal, () => call.cancel());
              sendAll(call, requests, toRequest, pump.signal, (error) => {
                sourceError = error;
              });
            }),
          );
      case "server_streaming":
        return (request: unknown, options: CallOptions = {}) =>
          this.#stream(method, options, (metadata, callOptions) =>
            client.makeServerStreamRequest(path, serialize, deserialize, toRequest(request), metadata, callOptions),
          );
      case "bidi_streaming":
        return (requests: AsyncIterable<unknown>, options: CallOptions = {}) =>
          this.#stream(method, options, (metadata, callOptions, signal) => {
            const call = client.makeBidiStreamRequest(path, serialize, deserialize, metadata, callOptions);
            const pump = linkedController(signal);
            call.on("status", () => pump.abort());
            sendAll(call, requests, toRequest, pump.signal, () => undefined);
            return call;
          });
    }
  }

  /**
   * Reads a response stream. Ending the loop early (break, return, an exception in the consumer) cancels
   * the call, which also stops the request pump of a bidi call.
   */
  async *#stream(
    method: DescMethod,
    options: CallOptions,
    start: (
      metadata: Metadata,
      callOptions: GrpcCallOptions,
      signal: AbortSignal,
    ) => ClientReadableStream<unknown> | ClientDuplexStream<unknown, unknown>,
  ): AsyncGenerator<unknown> {
    const { metadata, callOptions, span, ctx } = this.#prepare(method, options, false);
    const controller = linkedController(options.signal);
    const call = otelContext.with(ctx, () => start(metadata, callOptions, controller.signal));
    let finished = false;
    try {
      yield* readStream<unknown>(call, controller.signal, (error) => fromServiceError(error as ServiceError));
      finished = true;
    } catch (error) {
      if (span !== undefined) recordError(span, error);
      throw AppError.from(error);
    } finally {
      // Cancelling a call that already ended is a no-op; an abort or a consumer that stopped early must
      // reach the server, or the call (and whatever the server holds for it) stays open.
      if (!finished) call.cancel();
      controller.abort();
      span?.end();
    }
  }

  async #traced<T>(
    method: DescMethod,
    options: CallOptions,
    unary: boolean,
    run: (metadata: Metadata, callOptions: GrpcCallOptions) => Promise<T>,
  ): Promise<T> {
    const { metadata, callOptions, span, ctx } = this.#prepare(method, options, unary);
    try {
      return await otelContext.with(ctx, () => run(metadata, callOptions));
    } catch (error) {
      if (span !== undefined) recordError(span, error);
      throw error;
    } finally {
      span?.end();
    }
  }

  #prepare(method: DescMethod, options: CallOptions, unary: boolean) {
    const metadata = new Metadata();
    for (const [key, value] of Object.entries(options.headers ?? {})) metadata.set(key, value);
    const timeoutMs = options.timeoutMs ?? (unary ? (this.#options.defaultTimeoutMs ?? 30_000) : undefined);
    const callOptions: GrpcCallOptions = timeoutMs === undefined ? {} : { deadline: Date.now() + timeoutMs };
    const span =
      this.#options.tracing === false
        ? undefined
        : trace.getTracer("@poseloop/grpc").startSpan(`${method.parent.typeName}/${method.name}`, {
            kind: SpanKind.CLIENT,
            attributes: { "rpc.system": "grpc", "rpc.service": method.parent.typeName, "rpc.method": method.name },
          });
    const ctx = span === undefined ? otelContext.active() : trace.setSpan(otelContext.active(), span);
    injectIntoMetadata(metadata, ctx);
    return { metadata, callOptions, span, ctx };
  }
}

/**
 * Pumps requests into a client stream with flow control, then half-closes it. When the source fails the
 * call is cancelled (and `onSourceError` told); when `signal` aborts (the call ended) pumping just stops.
 */
function sendAll(
  call: Writable & { end(): void; cancel(): void },
  requests: AsyncIterable<unknown>,
  toRequest: (init: unknown) => never,
  signal: AbortSignal,
  onSourceError: (error: unknown) => void,
): void {
  writeAll(call, requests, toRequest, signal).then(
    () => call.end(),
    (error: unknown) => {
      if (signal.aborted) return;
      onSourceError(error);
      call.cancel();
    },
  );
}

function linkedController(signal: AbortSignal | undefined): AbortController {
  const controller = new AbortController();
  onAbort(signal, () => controller.abort(signal?.reason));
  return controller;
}

function onAbort(signal: AbortSignal | undefined, fn: () => void): void {
  if (signal === undefined) return;
  if (signal.aborted) fn();
  else signal.addEventListener("abort", fn, { once: true });
}
