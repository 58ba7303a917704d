import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createConnection, createServer, type AddressInfo, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { AppError, Code, describeStartupError, rootSystemError } from "@poseloop/core";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(cleanups.splice(0).map((cleanup) => cleanup()));
});

async function listening(port = 0): Promise<Server> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", resolve);
  });
  cleanups.push(() => new Promise((resolve) => server.close(() => resolve())));
  return server;
}

/** The error Node gives a second listener on a taken port. */
async function addressInUse(): Promise<{ port: number; error: unknown }> {
  const { port } = (await listening()).address() as AddressInfo;
  const error = await listening(port).then(
    () => undefined,
    (e: unknown) => e,
  );
  return { port, error };
}

async function connectionRefused(): Promise<{ port: number; error: unknown }> {
  const server = createServer();
  const port = await new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port)));
  await new Promise((resolve) => server.close(resolve));
  const error = await new Promise((resolve) => createConnection(port, "127.0.0.1").once("error", resolve));
  return { port, error };
}

describe("describeStartupError", () => {
  it("names a taken listen address and its code, through an AppError that adds nothing", async () => {
    const { port, error } = await addressInUse();
    expect(describeStartupError(AppError.from(error))).toBe(`cannot listen on 127.0.0.1:${port}: address already in use (EADDRINUSE)`);
  });

  it("finds a system error that grpc-js kept only as text", () => {
    const grpc = new Error("No address added out of total 1 resolved errors: [listen EADDRINUSE: address already in use 127.0.0.1:50052]");
    expect(describeStartupError(AppError.from(grpc, Code.UNAVAILABLE))).toBe("cannot listen on 127.0.0.1:50052: address already in use (EADDRINUSE)");
    const ipv6 = new Error("No address added out of total 1 resolved errors: [listen EACCES: permission denied :::80]");
    expect(describeStartupError(ipv6)).toBe("cannot listen on :::80: permission denied (EACCES)");
  });

  it("names a directory that cannot be created", async () => {
    const dir = await mkdtemp(join(tmpdir(), "startup-error-"));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    await writeFile(join(dir, "file"), "");
    const error = await mkdir(join(dir, "file", "work"), { recursive: true }).catch((e: unknown) => e);
    expect(describeStartupError(AppError.from(error))).toBe(`cannot create directory ${join(dir, "file", "work")}: not a directory (ENOTDIR)`);
    expect(describeStartupError(new Error("EACCES: permission denied, mkdir '/srv/work'"))).toBe("cannot create directory /srv/work: permission denied (EACCES)");
  });

  it("keeps the context an error adds to its cause", async () => {
    const { port, error } = await connectionRefused();
    const wrapped = new AppError(Code.UNAVAILABLE, `cannot connect to NATS at nats://127.0.0.1:${port}`, { cause: error });
    expect(describeStartupError(wrapped)).toBe(`cannot connect to NATS at nats://127.0.0.1:${port}: cannot connect to 127.0.0.1:${port}: connection refused (ECONNREFUSED)`);
    // Node's connect to a name with several addresses fails with an AggregateError of the attempts.
    const aggregate = Object.assign(new AggregateError([error], ""), { code: "ECONNREFUSED" });
    expect(describeStartupError(new AppError(Code.UNAVAILABLE, "cannot connect to NATS at nats://localhost", { cause: aggregate }))).toBe(
      `cannot connect to NATS at nats://localhost: cannot connect to 127.0.0.1:${port}: connection refused (ECONNREFUSED)`,
    );
  });

  it("ends with the innermost message, and its code, when no system error is in the chain", () => {
    const auth = new AppError(Code.UNAVAILABLE, "cannot connect to NATS at nats://nats:4222", { cause: new Error("Authorization Violation") });
    expect(describeStartupError(AppError.from(auth))).toBe("cannot connect to NATS at nats://nats:4222: Authorization Violation");
    const tls = Object.assign(new Error("self-signed certificate"), { code: "DEPTH_ZERO_SELF_SIGNED_CERT" });
    expect(describeStartupError(new AppError(Code.UNAVAILABLE, "cannot connect to NATS at tls://nats:4222", { cause: tls }))).toBe(
      "cannot connect to NATS at tls://nats:4222: self-signed certificate (DEPTH_ZERO_SELF_SIGNED_CERT)",
    );
  });

  it("reports an invalid configuration with every problem, on one line", () => {
    const invalid = AppError.invalid("trainer configuration", ["POSELOOP_TRAINER_LISTEN=\"x\" is not host:port", "POSELOOP_LOG_LEVEL=\"loud\"\nmust be one of debug, info"]);
    const line = describeStartupError(invalid);
    expect(line).toBe('invalid trainer configuration (2 problems): POSELOOP_TRAINER_LISTEN="x" is not host:port; POSELOOP_LOG_LEVEL="loud" must be one of debug, info');
  });

  it("copes with thrown non-errors and cyclic causes", () => {
    expect(describeStartupError("boom")).toBe("boom");
    const a = new Error("a");
    const b = new Error("b", { cause: a });
    (a as { cause?: unknown }).cause = b;
    expect(describeStartupError(b)).toBe("b: a");
  });
});

describe("rootSystemError", () => {
  it("returns the innermost system error with what it failed on", async () => {
    const { port, error } = await addressInUse();
    expect(rootSystemError(new Error("starting", { cause: AppError.from(error) }))).toEqual({
      code: "EADDRINUSE",
      syscall: "listen",
      target: `127.0.0.1:${port}`,
      description: "address already in use",
    });
    expect(rootSystemError(new Error("getaddrinfo ENOTFOUND nats.invalid"))).toMatchObject({ code: "ENOTFOUND", target: "nats.invalid" });
    expect(rootSystemError(new AppError(Code.INTERNAL, "internal error"))).toBeUndefined();
  });
});
