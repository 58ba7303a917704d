import { Metadata } from "@grpc/grpc-js";
import { AppError, Code } from "@poseloop/core";
import { Health } from "@poseloop/proto/grpc/health/v1/health_pb";
import { afterEach, describe, expect, it } from "vitest";
import { BearerTokenCheck, BearerTokenFailure, bearerToken } from "./bearer-token.js";
import { createClient } from "./client.js";
import type { MethodsOf, ServiceImpl } from "./handler-types.js";
import { GrpcServer } from "./server.js";

function withAuthorization(value?: string): Metadata {
  const metadata = new Metadata();
  if (value !== undefined) metadata.set("authorization", value);
  return metadata;
}

function failure(check: BearerTokenCheck, header?: string): string | undefined {
  try {
    check.check(withAuthorization(header));
    return undefined;
  } catch (error) {
    expect(AppError.is(error, Code.UNAUTHENTICATED)).toBe(true);
    return (error as AppError).message;
  }
}

describe("BearerTokenCheck", () => {
  const check = new BearerTokenCheck("s3cret-token");

  it("lets a call with the token through, whatever the case of the scheme", () => {
    for (const header of ["Bearer s3cret-token", "bearer s3cret-token", "BEARER  s3cret-token "]) {
      expect(failure(check, header)).toBeUndefined();
    }
  });

  it("says the token is missing when the call sends none, or none under the Bearer scheme", () => {
    for (const header of [undefined, "", "Bearer", "Bearer   ", "Basic czNjcmV0LXRva2Vu", "s3cret-token"]) {
      expect(failure(check, header)).toBe(BearerTokenFailure.MISSING);
    }
  });

  it("says a token was refused when the call sends another, of any length", () => {
    for (const header of ["Bearer nope", "Bearer s3cret-toke", "Bearer s3cret-token-and-more", "Bearer S3CRET-TOKEN", "Bearer s3cret token"]) {
      expect(failure(check, header)).toBe(BearerTokenFailure.REFUSED);
    }
  });

  it("checks nothing when the service has no token", () => {
    const open = new BearerTokenCheck("");
    expect(open.enabled).toBe(false);
    expect(failure(open)).toBeUndefined();
    expect(failure(open, "Bearer anything")).toBeUndefined();
  });

  it("reads the token of a header", () => {
    expect(bearerToken(withAuthorization("bearer abc"))).toBe("abc");
    expect(bearerToken(withAuthorization("Token abc"))).toBeUndefined();
  });
});

describe("BearerTokenCheck behind a server", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    while (cleanups.length > 0) await cleanups.pop()?.();
  });

  it("answers UNAUTHENTICATED with a message a client can tell apart: missing or refused", async () => {
    const check = new BearerTokenCheck("s3cret-token");
    const impl: ServiceImpl<MethodsOf<typeof Health>> = {
      check(_request, ctx) {
        check.check(ctx.metadata);
        return { status: 1 };
      },
      // eslint-disable-next-line require-yield
      async *watch() {
        throw new AppError(Code.UNIMPLEMENTED, "not in this test");
      },
      list() {
        throw new AppError(Code.UNIMPLEMENTED, "not in this test");
      },
    };
    const server = new GrpcServer({ health: false, reflection: false, tracing: false });
    server.register(Health, impl);
    const { port } = await server.listen("127.0.0.1", 0);
    cleanups.push(() => server.forceShutdown());
    const client = createClient(Health, `127.0.0.1:${port}`, { tracing: false });
    cleanups.push(() => client.$close());

    const missing = await client.check({}).catch((error: unknown) => error);
    expect(AppError.is(missing, Code.UNAUTHENTICATED)).toBe(true);
    expect((missing as AppError).message).toBe("missing bearer token");
    const refused = await client.check({}, { headers: { authorization: "Bearer nope" } }).catch((error: unknown) => error);
    expect(AppError.is(refused, Code.UNAUTHENTICATED)).toBe(true);
    expect((refused as AppError).message).toBe("bearer token refused");
    expect((await client.check({}, { headers: { authorization: "bearer s3cret-token" } })).status).toBe(1);
  });
});
