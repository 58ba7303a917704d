import type { PeerCertificate } from "node:tls";
import { create, type DescMethod, type DescService } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import {
  Server,
  ServerCredentials,
  type handleBidiStreamingCall,
  type handleClientStreamingCall,
  type handleServerStreamingCall,
  type handleUnaryCall,
  type Metadata,
  type ServerDuplexStream,
  type ServerReadableStream,
  type ServerUnaryCall,
  type ServerWritableStream,
  type UntypedHandleCall,
} from "@grpc/grpc-js";
import { context as otelContext, metrics, SpanKind, SpanStatusCode, trace, type Histogram, type Span } from "@opentelemetry/api";
import { AppError, Code, codeName, deferred, silentLogger, type Logger } from "@poseloop/core";
import { extractFromMetadata, recordError } from "@poseloop/telemetry";
import { certificatePrincipal, type AccessControl, type Caller } from "./access-control.js";
import type { HandlerContext, ServiceImpl } from "./handler-types.js";
import { HealthService, ServingStatus } from "./health.js";
import { createReflectionImpl } from "./reflection.js";
import { readStream, writeAll } from "./streams.js";
import { toServiceDefinition } from "./service-definition.js";
import { toStatus } from "./status.js";
import { ServerReflection } from "@poseloop/proto/grpc/reflection/v1/reflection_pb";
import { Health } from "@poseloop/proto/grpc/health/v1/health_pb";

export interface GrpcServerOptions {
  logger?: Logger;
  /** Largest request message accepted; larger ones fail with RESOURCE_EXHAUSTED. Default 16 MiB. */
  maxReceiveMessageBytes?: number;
  /** Largest response message sent. Default 16 MiB. */
  maxSendMessageBytes?: number;
  /**
   * Server-initiated keepalive pings: a connection whose peer does not answer one within `keepaliveTimeoutMs`
   * is closed, so a vanished client frees what it held. Default every 2 min, with a 20 s ack timeout; 0: none.
   */
  keepaliveTimeMs?: number;
  keepaliveTimeoutMs?: number;
  /**
   * A connection older than this is sent GOAWAY (clients reconnect, which also spreads them over replicas);
   * calls still open on it get `maxConnectionAgeGraceMs` more before it is closed. Default 30 min + 5 min; 0: no limit.
   */
  maxConnectionAgeMs?: number;
  maxConnectionAgeGraceMs?: number;
  /**
   * A connection with no call open for this long is closed, including one that never started HTTP/2.
   * Default 5 min; 0: no limit.
   */
  maxConnectionIdleMs?: number;
  /** Serve grpc.health.v1. Default true. */
  health?: boolean;
  /** Overall health status once listening; the inferencer starts NOT_SERVING until a model loads. */
  initialHealth?: "SERVING" | "NOT_SERVING";
  /** Serve gRPC server reflection (v1 and v1alpha). Default true. */
  reflection?: boolean;
  /** A SERVER span per call, child of the trace context in the request metadata. Default true. */
  tracing?: boolean;
  /**
   * Checked before every handler runs: bearer tokens and the role each method needs. Default: none (every
   * call is let through; bind such a server to loopback only).
   */
  access?: AccessControl;
  /** How listen() binds. Default insecure (plaintext HTTP/2). */
  credentials?: ServerCredentials;
}

export interface ListenAddress {
  host: string;
  port: number;
}

export interface DrainResult {
  /** True when calls were still open at the timeout and were cancelled. */
  forced: boolean;
}

interface ActiveCall {
  controller: AbortController;
}

const REFLECTION_V1ALPHA = "grpc.reflection.v1alpha.ServerReflection";

/**
 * A grpc-js server for protobuf-es services: typed handlers (see ServiceImpl), status mapping at the edge,
 * a span per call, health and reflection, and a graceful drain with a forced fallback.
 */
export class GrpcServer {
  readonly health: HealthService;
  readonly #server: Server;
  readonly #logger: Logger;
  readonly #options: GrpcServerOptions;
  /** Services served, with the names they are served under (v1alpha reflection aliases v1). */
  readonly #served: { name: string; service: DescService }[] = [];
  readonly #active = new Set<ActiveCall>();
  readonly #draining = new AbortController();
  /** rpc.server.call.duration (OpenTelemetry RPC semantic conventions), in seconds, of every call. */
  readonly #callDuration: Histogram;
  #address: ListenAddress | undefined;
  #stopped = false;

  constructor(options: GrpcServerOptions = {}) {
    this.#options = options;
    this.#logger = options.logger ?? silentLogger;
    this.health = new HealthService();
    this.#server = new Server(connectionOptions(options));
    // Taken here, not at import: the global MeterProvider exists only once the service's telemetry started.
    this.#callDuration = metrics.getMeter("@poseloop/grpc").createHistogram("rpc.server.call.duration", {
      unit: "s",
      description: "Duration of RPCs received, from the call's start to its status (a stream's whole life)",
      advice: { explicitBucketBoundaries: RPC_DURATION_BUCKETS_S },
    });
  }

  /** The address it listens on, once listening. */
  get address(): ListenAddress | undefined {
    return this.#address;
  }

  /** Serves `service` with `impl`. Call before listen(). */
  register<S extends GenServiceMethods>(service: GenService<S>, impl: ServiceImpl<S>, typeName?: string): this {
    const desc = service as unknown as DescService;
    const handlers: Record<string, UntypedHandleCall> = {};
    const implementation = impl as unknown as Record<string, (...args: never[]) => unknown>;
    for (const method of desc.methods) {
      const handler = implementation[method.localName];
      if (handler === undefined) throw new AppError(Code.INTERNAL, `no handler for ${desc.typeName}.${method.name}`);
      handlers[method.localName] = this.#wrap(method, handler.bind(impl) as Handler);
    }
    this.#server.addService(toServiceDefinition(desc, typeName), handlers);
    this.#served.push({ name: typeName ?? desc.typeName, service: desc });
    return this;
  }

  /** Binds "host:port" (port 0: a free one) and starts serving. */
  async listen(host = "0.0.0.0", port = 0): Promise<ListenAddress> {
    if (this.#options.health !== false) {
      this.register(Health, this.health.implementation());
    }
    if (this.#options.reflection !== false) {
      const reflection = createReflectionImpl(() => ({
        names: this.#served.map((entry) => entry.name),
        services: this.#served.map((entry) => entry.service),
      }));
      this.register(ServerReflection, reflection);
      this.register(ServerReflection, reflection, REFLECTION_V1ALPHA);
    }
    const target = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
    const boundPort = await new Promise<number>((resolve, reject) => {
      this.#server.bindAsync(target, this.#options.credentials ?? ServerCredentials.createInsecure(), (error, bound) => {
        if (error !== null) reject(AppError.from(error, Code.UNAVAILABLE));
        else resolve(bound);
      });
    });
    const status = this.#options.initialHealth === "NOT_SERVING" ? ServingStatus.NOT_SERVING : ServingStatus.SERVING;
    this.health.setStatus("", status);
    for (const { name } of this.#served) this.health.setStatus(name, status);
    this.#address = { host, port: boundPort };
    return this.#address;
  }

  /**
   * Stops taking calls and waits for open ones to finish, telling handlers through ctx.draining; calls still
   * open after `timeoutMs` are cancelled. Health reports NOT_SERVING from the start, so load balancers stop
   * sending new work.
   */
  async drain(timeoutMs: number): Promise<DrainResult> {
    if (this.#stopped) return { forced: false };
    this.#stopped = true;
    this.health.shutdown();
    this.#draining.abort(new AppError(Code.UNAVAILABLE, "server is shutting down"));
    const done = deferred<boolean>();
    const timer = setTimeout(() => done.resolve(true), timeoutMs);
    this.#server.tryShutdown(() => done.resolve(false));
    const forced = await done.promise;
    clearTimeout(timer);
    if (forced) this.forceShutdown();
    return { forced };
  }

  /** Cancels every open call and closes every connection now. */
  forceShutdown(): void {
    this.#stopped = true;
    this.health.shutdown();
    const reason = new AppError(Code.UNAVAILABLE, "server shut down");
    this.#draining.abort(reason);
    for (const call of this.#active) call.controller.abort(reason);
    this.#server.forceShutdown();
  }

  #wrap(method: DescMethod, handler: Handler): UntypedHandleCall {
    switch (method.methodKind) {
      case "unary":
        return ((call: ServerUnaryCall<unknown, unknown>, callback) => {
          void this.#run(method, call, async (ctx) => handler(call.request, ctx)).then(
            (response) => callback(null, create(method.output, response as never)),
            (error: unknown) => callback(toStatus(error, this.#logger, method.toString())),
          );
        }) satisfies handleUnaryCall<unknown, unknown>;
      case "server_streaming":
        return ((call: ServerWritableStream<unknown, unknown>) => {
          void this.#run(method, call, async (ctx) => {
            const output = handler(call.request, ctx) as AsyncIterable<unknown>;
            await writeAll(call, output, (item) => create(method.output, item as never), ctx.signal);
          }).then(
            () => call.end(),
            (error: unknown) => call.emit("error", toStatus(error, this.#logger, method.toString())),
          );
        }) satisfies handleServerStreamingCall<unknown, unknown>;
      case "client_streaming":
        return ((call: ServerReadableStream<unknown, unknown>, callback) => {
          void this.#run(method, call, async (ctx) => handler(readStream(call, ctx.signal), ctx)).then(
            (response) => callback(null, create(method.output, response as never)),
            (error: unknown) => callback(toStatus(error, this.#logger, method.toString())),
          );
        }) satisfies handleClientStreamingCall<unknown, unknown>;
      case "bidi_streaming":
        return ((call: ServerDuplexStream<unknown, unknown>) => {
          void this.#run(method, call, async (ctx) => {
            const output = handler(readStream(call, ctx.signal), ctx) as AsyncIterable<unknown>;
            await writeAll(call, output, (item) => create(method.output, item as never), ctx.signal);
          }).then(
            () => call.end(),
            (error: unknown) => call.emit("error", toStatus(error, this.#logger, method.toString())),
          );
        }) satisfies handleBidiStreamingCall<unknown, unknown>;
    }
  }

  /**
   * The caller: its role when the server checks tokens, and its principal (see Caller); throws
   * UNAUTHENTICATED or PERMISSION_DENIED.
   */
  #authorize(method: DescMethod, ctx: HandlerContext, certificate: PeerCertificate | undefined): Caller {
    const access = this.#options.access;
    if (access === undefined) return { role: undefined, principal: certificatePrincipal(certificate) };
    try {
      return access.check(method, ctx.metadata, certificate);
    } catch (error) {
      // Who was turned away and why, never what they sent: a wrong token may be a right one mistyped.
      const refusal = AppError.from(error);
      ctx.logger.info("call refused", { code: codeName(refusal.code), reason: refusal.message, peer: ctx.peer });
      throw error;
    }
  }

  /** Runs one call: its context and abort signal, its span, and bookkeeping for drain. */
  async #run<T>(method: DescMethod, call: CallLike, body: (ctx: HandlerContext) => Promise<T>): Promise<T> {
    const controller = new AbortController();
    const active: ActiveCall = { controller };
    this.#active.add(active);
    const onCancel = (): void => controller.abort(new AppError(Code.CANCELLED, "call cancelled by the client"));
    call.on("cancelled", onCancel);
    const deadline = call.getDeadline();
    const deadlineDate = deadline instanceof Date ? deadline : Number.isFinite(deadline) ? new Date(deadline) : undefined;
    const ctx: HandlerContext = {
      method,
      metadata: call.metadata,
      signal: controller.signal,
      draining: this.#draining.signal,
      deadline: deadlineDate,
      peer: call.getPeer(),
      abort: (reason) => controller.abort(reason),
      logger: this.#logger.child({ rpc: `${method.parent.typeName}/${method.name}` }),
    };
    const parent = extractFromMetadata(call.metadata, otelContext.active());
    const span: Span | undefined =
      this.#options.tracing === false
        ? undefined
        : trace.getTracer("@poseloop/grpc").startSpan(
            `${method.parent.typeName}/${method.name}`,
            {
              kind: SpanKind.SERVER,
              attributes: {
                "rpc.system": "grpc",
                "rpc.service": method.parent.typeName,
                "rpc.method": method.name,
              },
            },
            parent,
          );
    const spanContext = span === undefined ? parent : trace.setSpan(parent, span);
    const started = performance.now();
    let status: Code = Code.OK;
    try {
      const result = await otelContext.with(spanContext, () => {
        const { role, principal } = this.#authorize(method, ctx, peerCertificate(call));
        return body({ ...ctx, ...(role === undefined ? {} : { role }), ...(principal === undefined ? {} : { principal }) });
      });
      span?.setAttribute("rpc.grpc.status_code", Code.OK);
      return result;
    } catch (error) {
      const code = AppError.from(error).code;
      status = code;
      if (span !== undefined) {
        span.setAttribute("rpc.grpc.status_code", code);
        if (code === Code.INTERNAL || code === Code.UNKNOWN || code === Code.DATA_LOSS || code === Code.UNAVAILABLE) {
          recordError(span, error);
        } else {
          span.setStatus({ code: SpanStatusCode.UNSET });
        }
      }
      throw error;
    } finally {
      // Recorded in the call's context, which an SDK with exemplars links the sample to (sdk-metrics 2.12 keeps none).
      otelContext.with(spanContext, () =>
        this.#callDuration.record((performance.now() - started) / 1000, {
          "rpc.system": "grpc",
          "rpc.service": method.parent.typeName,
          "rpc.method": method.name,
          "rpc.grpc.status_code": status,
        }),
      );
      span?.end();
      call.off("cancelled", onCancel);
      this.#active.delete(active);
      controller.abort(new AppError(Code.CANCELLED, "call finished"));
    }
  }
}

type Handler = (input: unknown, ctx: HandlerContext) => unknown;

/** The semantic conventions' advice for RPC durations, stretched to minutes for long-lived streams. */
const RPC_DURATION_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 30, 60, 300, 1800];

/** Defaults of the connection limits of GrpcServerOptions. */
export const CONNECTION_DEFAULTS = Object.freeze({
  keepaliveTimeMs: 2 * 60_000,
  keepaliveTimeoutMs: 20_000,
  maxConnectionAgeMs: 30 * 60_000,
  maxConnectionAgeGraceMs: 5 * 60_000,
  maxConnectionIdleMs: 5 * 60_000,
});

/** The grpc-js server options (the ones 1.14 honours) for `options`; a limit of 0 is left out: none. */
function connectionOptions(options: GrpcServerOptions): Record<string, number> {
  const limit = (value: number | undefined, fallback: number): number | undefined => {
    const ms = value ?? fallback;
    return ms > 0 ? ms : undefined;
  };
  const settings: Record<string, number | undefined> = {
    "grpc.max_receive_message_length": options.maxReceiveMessageBytes ?? 16 * 1024 * 1024,
    "grpc.max_send_message_length": options.maxSendMessageBytes ?? 16 * 1024 * 1024,
    "grpc.keepalive_time_ms": limit(options.keepaliveTimeMs, CONNECTION_DEFAULTS.keepaliveTimeMs),
    "grpc.keepalive_timeout_ms": limit(options.keepaliveTimeoutMs, CONNECTION_DEFAULTS.keepaliveTimeoutMs),
    "grpc.keepalive_permit_without_calls": 1,
    // Asks clients to ping at most every 10 s without data. grpc-js 1.14's server does not enforce it (no
    // too_many_pings GOAWAY); idle and age limits bound what a pinging client can hold.
    "grpc.http2.min_ping_interval_without_data_ms": 10_000,
    "grpc.max_connection_age_ms": limit(options.maxConnectionAgeMs, CONNECTION_DEFAULTS.maxConnectionAgeMs),
    // grpc-js waits forever after GOAWAY when no grace is set; without an age there is no GOAWAY to wait after.
    "grpc.max_connection_age_grace_ms": limit(options.maxConnectionAgeGraceMs, CONNECTION_DEFAULTS.maxConnectionAgeGraceMs),
    "grpc.max_connection_idle_ms": limit(options.maxConnectionIdleMs, CONNECTION_DEFAULTS.maxConnectionIdleMs),
  };
  return Object.fromEntries(Object.entries(settings).filter((entry): entry is [string, number] => entry[1] !== undefined));
}

/**
 * The client certificate of a call over mutual TLS. grpc-js (1.10 and later) hands it over only once the TLS
 * handshake verified it against the client CAs; plaintext calls and TLS without client certificates have none.
 */
function peerCertificate(call: CallLike): PeerCertificate | undefined {
  return call.getAuthContext?.()?.sslPeerCertificate;
}

interface CallLike {
  readonly metadata: Metadata;
  getDeadline(): Date | number;
  getPeer(): string;
  getAuthContext?(): { sslPeerCertificate?: PeerCertificate | undefined } | null;
  on(event: "cancelled", listener: () => void): unknown;
  off(event: "cancelled", listener: () => void): unknown;
}
