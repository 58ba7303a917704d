import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { AppError, Code } from "@poseloop/core";
import { makeTempDir, NatsServer } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectNats } from "./connection.js";

describe("connectNats with credentials", () => {
  let tokenServer: NatsServer;
  let userServer: NatsServer;
  let dir: { path: string; remove: () => Promise<void> };
  beforeAll(async () => {
    dir = await makeTempDir("poseloop-nats-auth-");
    tokenServer = await NatsServer.start({ args: ["--auth", "nats-token-0123456789"] });
    userServer = await NatsServer.start({ args: ["--user", "poseloop", "--pass", "hunter2-secret"] });
  });
  afterAll(async () => {
    await tokenServer.dispose();
    await userServer.dispose();
    await dir.remove();
  });

  it("connects with the token from a token file", async () => {
    const tokenFile = join(dir.path, "token");
    await writeFile(tokenFile, "nats-token-0123456789\n");
    const connection = await connectNats({ servers: tokenServer.url, security: { tokenFile }, timeoutMs: 5000 });
    await connection.flush();
    await connection.close();
  });

  it("connects with a user and the password from a file, or from the URL's user part", async () => {
    const passwordFile = join(dir.path, "password");
    await writeFile(passwordFile, "hunter2-secret\n");
    const fromFile = await connectNats({ servers: userServer.url, security: { user: "poseloop", passwordFile }, timeoutMs: 5000 });
    await fromFile.close();
    const inUrl = userServer.url.replace("nats://", "nats://poseloop:hunter2-secret@");
    const fromUrl = await connectNats({ servers: inUrl, timeoutMs: 5000 });
    await fromUrl.close();
  });

  it("reads a rotated password file again when it reconnects, with no restart", async () => {
    const config = join(dir.path, "rotating.conf");
    const passwordFile = join(dir.path, "rotating-password");
    await writeFile(config, 'authorization { user: poseloop, password: "first-secret-0123" }\n');
    await writeFile(passwordFile, "first-secret-0123\n");
    const server = await NatsServer.start({ args: ["-c", config] });
    try {
      const connection = await connectNats({ servers: server.url, security: { user: "poseloop", passwordFile }, timeoutMs: 5000 });
      try {
        // The operator rotates the secret: the server's and the client's file, then the server restarts.
        await writeFile(config, 'authorization { user: poseloop, password: "second-secret-0123" }\n');
        await writeFile(passwordFile, "second-secret-0123\n");
        await server.restart();
        await expect.poll(async () => connection.flush().then(() => true, () => false), { timeout: 15_000, interval: 250 }).toBe(true);
        expect(connection.isClosed()).toBe(false);
      } finally {
        await connection.close();
      }
    } finally {
      await server.dispose();
    }
  });

  it("fails with UNAUTHENTICATED naming what was sent, never the secret, when credentials are missing or wrong", async () => {
    const none = await connectNats({ servers: tokenServer.url, timeoutMs: 5000 }).catch((error: unknown) => error);
    expect(AppError.is(none, Code.UNAUTHENTICATED)).toBe(true);
    expect((none as AppError).message).toMatch(/refused this client's credentials \(none were configured\)/);
    const wrong = await connectNats({ servers: userServer.url.replace("nats://", "nats://poseloop:not-it-secret@"), timeoutMs: 5000 }).catch((error: unknown) => error);
    expect(AppError.is(wrong, Code.UNAUTHENTICATED)).toBe(true);
    expect((wrong as AppError).message).toContain("user poseloop");
    expect((wrong as AppError).message).not.toContain("not-it-secret");
  });
});
