import type { DescMessage, DescMethod, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import type { GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import type { Metadata } from "@grpc/grpc-js";
import type { Logger } from "@poseloop/core";
import type { Role } from "./access-control.js";

type MethodShape = GenServiceMethods[string];
type Input<M extends MethodShape> = M["input"] extends DescMessage ? MessageShape<M["input"]> : never;
type OutputInit<M extends MethodShape> = M["output"] extends DescMessage ? MessageInitShape<M["output"]> : never;
type Output<M extends MethodShape> = M["output"] extends DescMessage ? MessageShape<M["output"]> : never;
type InputInit<M extends MethodShape> = M["input"] extends DescMessage ? MessageInitShape<M["input"]> : never;

/** What a handler knows about its call. */
export interface HandlerContext {
  readonly method: DescMethod;
  /** The request headers. */
  readonly metadata: Metadata;
  /** Aborts when the client cancels, the deadline passes, or the server is forced down. */
  readonly signal: AbortSignal;
  /** Aborts when the server starts draining: long streams should wind down and end. */
  readonly draining: AbortSignal;
  readonly deadline: Date | undefined;
  /** The client's address: "host:port" ("::1:50000" for IPv6), or "unknown". */
  readonly peer: string;
  /**
   * Ends the call now with `reason` as its status (an AppError's code; CANCELLED otherwise): aborts `signal`
   * and stops waiting on the client, even where a write waits for a client that does not read. For a handler
   * whose own timers find the client gone silent while it is suspended in a `yield`.
   */
  abort(reason: unknown): void;
  readonly logger: Logger;
  /** The role of the caller's bearer token, on a server that checks tokens (see AccessControl). */
  readonly role?: Role;
  /**
   * Who is calling, without revealing a secret: "token:<12 hex digits of the token's SHA-256>", or
   * "cert:<subject CN>" for a verified client certificate when no token was checked (see Caller). Absent on
   * a server without tokens whose client presented no certificate.
   */
  readonly principal?: string;
}

/**
 * The handler of one method, by kind: unary returns a response; server streaming yields responses; client
 * streaming reads requests and returns one response; bidi reads requests and yields responses. Responses
 * may be message-init objects. A thrown AppError becomes the call's status.
 */
export type MethodHandler<M extends MethodShape> = M["methodKind"] extends "unary"
  ? (request: Input<M>, ctx: HandlerContext) => Promise<OutputInit<M>> | OutputInit<M>
  : M["methodKind"] extends "server_streaming"
    ? (request: Input<M>, ctx: HandlerContext) => AsyncIterable<OutputInit<M>>
    : M["methodKind"] extends "client_streaming"
      ? (requests: AsyncIterable<Input<M>>, ctx: HandlerContext) => Promise<OutputInit<M>>
      : (requests: AsyncIterable<Input<M>>, ctx: HandlerContext) => AsyncIterable<OutputInit<M>>;

/** Handlers for every method of a service. */
export type ServiceImpl<S extends GenServiceMethods> = { [K in keyof S]: MethodHandler<S[K]> };

/** Per-call client options. */
export interface CallOptions {
  /** Cancels the call. */
  signal?: AbortSignal;
  /** Deadline from now; unary calls default to the client's defaultTimeoutMs, streams to none. */
  timeoutMs?: number;
  /** Extra request headers. */
  headers?: Readonly<Record<string, string>>;
}

/** A client method, by kind. Streams are async iterables both ways, with flow control. */
export type ClientMethod<M extends MethodShape> = M["methodKind"] extends "unary"
  ? (request: InputInit<M>, options?: CallOptions) => Promise<Output<M>>
  : M["methodKind"] extends "server_streaming"
    ? (request: InputInit<M>, options?: CallOptions) => AsyncIterable<Output<M>, void, undefined>
    : M["methodKind"] extends "client_streaming"
      ? (requests: AsyncIterable<InputInit<M>>, options?: CallOptions) => Promise<Output<M>>
      : (requests: AsyncIterable<InputInit<M>>, options?: CallOptions) => AsyncIterable<Output<M>, void, undefined>;

/** A typed client for every method of a service. */
export type ServiceClient<S extends GenServiceMethods> = { [K in keyof S]: ClientMethod<S[K]> };

/** The method map of a generated service: `MethodsOf<typeof InferenceService>`. */
export type MethodsOf<T> = T extends { method: infer M } ? { [K in keyof M]: M[K] extends MethodShape ? M[K] : never } : never;
