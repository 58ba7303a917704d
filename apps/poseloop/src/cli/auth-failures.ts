import { AppError, Code } from "@poseloop/core";
import { BearerTokenFailure } from "@poseloop/grpc";

/** Where the CLI's token came from; undefined when it sent none. */
export type TokenSource = "--token" | "POSELOOP_TOKEN" | undefined;

/**
 * An UNAUTHENTICATED answer as a user can act on it: with no token, where to give one; with one, that
 * this service refused it. The service's own wording decides ("missing bearer token", "bearer token
 * refused"); a service that words it otherwise is judged by whether a token was sent. Other errors pass.
 */
export function explainAuthFailure(error: unknown, service: string, address: string, token: TokenSource): unknown {
  if (!AppError.is(error, Code.UNAUTHENTICATED)) return error;
  const refused = error.message === BearerTokenFailure.REFUSED || (error.message !== BearerTokenFailure.MISSING && token !== undefined);
  const message = refused
    ? `the ${service} refused the token ${token === "--token" ? "given with --token" : "in POSELOOP_TOKEN"} (${service} at ${address})`
    : `the ${service} at ${address} needs a bearer token: pass --token or set POSELOOP_TOKEN`;
  return new AppError(Code.UNAUTHENTICATED, message, { cause: error });
}

/**
 * `client` with every call's UNAUTHENTICATED explained by explainAuthFailure, for promises and streams
 * alike. Only the command line knows where the token came from and which service it was talking to, so
 * the explaining happens here rather than in the SDK; the commands use the client as it is.
 */
export function explainingAuthFailures<T extends object>(client: T, service: string, address: string, token: TokenSource): T {
  const explain = (error: unknown): unknown => explainAuthFailure(error, service, address, token);
  return new Proxy(client, {
    get(target, key) {
      const value: unknown = Reflect.get(target, key, target);
      if (typeof value !== "function") return value;
      return (...args: unknown[]): unknown => {
        // The client's own methods use its private fields: call them on the client, not on the proxy.
        const result: unknown = (value as (...a: unknown[]) => unknown).apply(target, args);
        if (result instanceof Promise) return result.catch((error: unknown) => Promise.reject(explain(error)));
        if (isAsyncIterable(result)) return explainingStream(result, explain);
        return result;
      };
    },
  });
}

function isAsyncIterable(value: unknown): value is AsyncIterable<unknown> {
  return typeof value === "object" && value !== null && Symbol.asyncIterator in value;
}

async function* explainingStream<T>(stream: AsyncIterable<T>, explain: (error: unknown) => unknown): AsyncGenerator<T, void, undefined> {
  try {
    // yield* hands a consumer's early return on to the stream, which ends its call.
    yield* stream;
  } catch (error) {
    throw explain(error);
  }
}
