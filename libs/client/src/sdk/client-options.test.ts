import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AppError, Code } from "@poseloop/core";
import { describe, expect, it } from "vitest";
import { connectionFailure, connectionsFromEnv, inService, resolveConnection, toCallOptions } from "./client-options.js";

describe("connection options", () => {
  it("reads addresses and the token from the environment, ignoring empty variables", () => {
    expect(connectionsFromEnv({ POSELOOP_TRAINER_ADDR: "gpu-1:7000", POSELOOP_INFERENCER_ADDR: " ", POSELOOP_TOKEN: "s3cret" })).toEqual({
      trainer: { address: "gpu-1:7000", token: "s3cret" },
      inferencer: { token: "s3cret" },
    });
    expect(connectionsFromEnv({})).toEqual({ trainer: {}, inferencer: {} });
  });

  it("reads a token file and TLS files from the environment, and the token from the file's first line", () => {
    const dir = mkdtempSync(join(tmpdir(), "poseloop-sdk-"));
    try {
      const tokenFile = join(dir, "token");
      writeFileSync(tokenFile, "file-token-0123456789\nnext line ignored\n");
      const env = { POSELOOP_TOKEN_FILE: tokenFile, POSELOOP_TLS_CA: join(dir, "ca.pem") };
      const { trainer } = connectionsFromEnv(env);
      expect(trainer).toEqual({ tokenFile, tls: { caFile: join(dir, "ca.pem") } });
      expect(resolveConnection({ tokenFile }, "x:1").headers).toEqual({ authorization: "Bearer file-token-0123456789" });
      expect(resolveConnection({ tokenFile, token: "flag-wins" }, "x:1").headers).toEqual({ authorization: "Bearer flag-wins" });
      const error = (() => {
        try {
          resolveConnection(trainer, "x:1");
        } catch (e) {
          return e;
        }
      })();
      expect((error as AppError).problems).toEqual([`cannot read the TLS CA file ${join(dir, "ca.pem")}: ENOENT`]);
      expect(() => resolveConnection({ tls: { certFile: "c.pem" } }, "x:1")).toThrow(/a client certificate and its key go together/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("defaults the address, drops a scheme, and sends the token as a bearer authorization header", () => {
    const connection = resolveConnection({ token: "abc.def" }, "localhost:50052");
    expect(connection.address).toBe("localhost:50052");
    expect(resolveConnection({ address: "grpc://[::1]:9000/" }, "x:1").address).toBe("[::1]:9000");
    expect(toCallOptions(connection, { timeoutMs: 500, headers: { "x-request-id": "1" } })).toEqual({
      headers: { authorization: "Bearer abc.def", "x-request-id": "1" },
      timeoutMs: 500,
    });
    expect(connection.client.defaultTimeoutMs).toBe(30_000);
  });

  it("reports every bad option at once", () => {
    const error = (() => {
      try {
        resolveConnection({ address: "localhost", token: "two words", defaultTimeoutMs: 0 }, "x:1");
      } catch (e) {
        return e;
      }
    })();
    expect(AppError.is(error, Code.INVALID_ARGUMENT)).toBe(true);
    expect((error as AppError).problems).toEqual([
      'address "localhost" is not host:port',
      "the token must be one word of visible characters",
      "defaultTimeoutMs must be a positive number, got 0",
    ]);
  });

  it("names the service in connection failures and deadlines, once", () => {
    const refused = new AppError(Code.UNAVAILABLE, "No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:50052. Resolution note: ");
    const named = inService(refused, "trainer", "localhost:50052");
    expect(named.message).toBe("the trainer at localhost:50052 is unavailable: connect ECONNREFUSED 127.0.0.1:50052");
    expect(inService(named, "trainer", "localhost:50052").message).toBe(named.message);
    expect(inService(new AppError(Code.DEADLINE_EXCEEDED, "Deadline exceeded"), "inferencer", "h:1").message).toBe(
      "the inferencer at h:1 did not answer in time: Deadline exceeded",
    );
    const notFound = new AppError(Code.NOT_FOUND, "job x not found");
    expect(inService(notFound, "trainer", "h:1")).toBe(notFound);
    expect(connectionFailure("connection reset")).toBe("connection reset");
  });
});
