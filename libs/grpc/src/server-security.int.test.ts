import { copyFile, readFile, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { join } from "node:path";
import { credentials, type ChannelCredentials } from "@grpc/grpc-js";
import { AppError, Code, createJsonLogger, silentLogger } from "@poseloop/core";
import { Health, HealthCheckResponse_ServingStatus } from "@poseloop/proto/grpc/health/v1/health_pb";
import { ServerReflection } from "@poseloop/proto/grpc/reflection/v1/reflection_pb";
import { InferenceService } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { accessKey, Role, type MethodAccessMap } from "./access-control.js";
import { createClient } from "./client.js";
import { startGrpcServer, type GrpcServerSettings } from "./config.js";
import type { MethodsOf, ServiceImpl } from "./handler-types.js";
import { GrpcServer } from "./server.js";
import { ReloadingServerCredentials } from "./server-tls.js";
import { createTestPki, type TestPki } from "./testing/test-certificates.js";

type InferenceImpl = ServiceImpl<MethodsOf<typeof InferenceService>>;

const STREAM_TOKEN = "stream-token-0123456789";
const ADMIN_TOKEN = "admin-token-0123456789";

const impl: InferenceImpl = {
  async *streamKeypoints(requests) {
    for await (const request of requests) {
      if (request.payload.case === "frame") yield { payload: { case: "result", value: { frameId: request.payload.value.frameId } } };
    }
  },
  detectKeypoints: (request) => ({ result: { frameId: request.frame?.frameId ?? 0n } }),
  getServingModel: () => ({}),
  // eslint-disable-next-line require-yield
  async *watchServingModel() {
    throw new AppError(Code.UNIMPLEMENTED, "not in this test");
  },
};

const method = (name: string) => {
  const found = InferenceService.methods.find((m) => m.name === name);
  if (found === undefined) throw new Error(name);
  return found;
};
const ACCESS: MethodAccessMap = {
  [accessKey(method("StreamKeypoints"))]: Role.STREAM,
  [accessKey(method("DetectKeypoints"))]: Role.STREAM,
  [accessKey(method("GetServingModel"))]: Role.ADMIN,
};

function settingsOf(overrides: Partial<GrpcServerSettings>): GrpcServerSettings {
  return {
    host: "127.0.0.1",
    port: 0,
    maxMessageBytes: 1024 * 1024,
    drainTimeoutMs: 1000,
    keepaliveTimeMs: 120_000,
    maxConnectionAgeMs: 0,
    maxConnectionIdleMs: 0,
    tokens: [],
    tokenFiles: [],
    methodAccess: ACCESS,
    tls: undefined,
    insecure: false,
    tokensVariable: "POSELOOP_INFERENCER_TOKENS",
    ...overrides,
  };
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function start(overrides: Partial<GrpcServerSettings>, tokenReloadIntervalMs?: number) {
  const lines: Record<string, unknown>[] = [];
  const logger = createJsonLogger({ name: "test", write: (line) => lines.push(JSON.parse(line) as Record<string, unknown>) });
  const running = await startGrpcServer(settingsOf(overrides), {
    logger,
    service: "inferencer",
    register: (server) => void server.register(InferenceService, impl),
    ...(tokenReloadIntervalMs === undefined ? {} : { tokenReloadIntervalMs }),
  });
  cleanups.push(() => running.stop());
  return { port: running.address.port, lines };
}

function clientsOf(port: number, channel?: ChannelCredentials, host = "127.0.0.1") {
  const options = { tracing: false, defaultTimeoutMs: 5000, ...(channel === undefined ? {} : { credentials: channel }) };
  const inference = createClient(InferenceService, `${host}:${port}`, options);
  const health = createClient(Health, `${host}:${port}`, options);
  const reflection = createClient(ServerReflection, `${host}:${port}`, options);
  cleanups.push(() => {
    inference.$close();
    health.$close();
    reflection.$close();
  });
  return { inference, health, reflection };
}

const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
const failure = (promise: Promise<unknown>) => promise.then(() => "ok", (error: unknown) => `${AppError.from(error).code}:${AppError.from(error).message}`);

describe("a server with tokens", () => {
  it("refuses anonymous calls, lets each role through where it may go, and names the role it lacks", async () => {
    const { port } = await start({ tokens: [{ role: Role.STREAM, token: STREAM_TOKEN }, { role: Role.ADMIN, token: ADMIN_TOKEN }] });
    const { inference } = clientsOf(port);
    expect(await failure(inference.detectKeypoints({}))).toBe(`${Code.UNAUTHENTICATED}:missing bearer token`);
    expect(await failure(inference.detectKeypoints({}, bearer("guess-guess-guess")))).toBe(`${Code.UNAUTHENTICATED}:bearer token refused`);
    expect(await failure(inference.detectKeypoints({}, bearer(STREAM_TOKEN)))).toBe("ok");
    expect(await failure(inference.getServingModel({}, bearer(STREAM_TOKEN)))).toBe(`${Code.PERMISSION_DENIED}:GetServingModel needs a token with the admin role`);
    expect(await failure(inference.getServingModel({}, bearer(ADMIN_TOKEN)))).toBe("ok");
  });

  it("refuses an anonymous stream before its handler sees a frame", async () => {
    const { port } = await start({ tokens: [{ role: Role.STREAM, token: STREAM_TOKEN }] });
    const { inference } = clientsOf(port);
    const frames = async function* () {
      yield { payload: { case: "frame" as const, value: { frameId: 1n } } };
    };
    const read = async (options = {}) => {
      const ids: bigint[] = [];
      for await (const response of inference.streamKeypoints(frames(), options)) {
        if (response.payload.case === "result") ids.push(response.payload.value.frameId);
      }
      return ids;
    };
    expect(await failure(read())).toBe(`${Code.UNAUTHENTICATED}:missing bearer token`);
    expect(await read(bearer(STREAM_TOKEN))).toEqual([1n]);
  });

  it("keeps health checks open and reflection closed to anonymous callers", async () => {
    const { port } = await start({ tokens: [{ role: Role.STREAM, token: STREAM_TOKEN }] });
    const { health, reflection } = clientsOf(port);
    expect((await health.check({ service: "" })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    const list = async function* () {
      yield { messageRequest: { case: "listServices" as const, value: "" } };
    };
    const names = async (options = {}) => {
      for await (const response of reflection.serverReflectionInfo(list(), options)) {
        if (response.messageResponse.case === "listServicesResponse") return response.messageResponse.value.service.map((s) => s.name);
      }
      return [];
    };
    expect(await failure(names())).toBe(`${Code.UNAUTHENTICATED}:missing bearer token`);
    expect(await names(bearer(STREAM_TOKEN))).toContain("poseloop.inference.v1.InferenceService");
  });

  it("reads tokens from token files, and follows a rotation without a restart", async () => {
    const pki = await createTestPki();
    cleanups.push(() => pki.remove());
    const file = join(pki.dir, "tokens");
    await writeFile(file, `# inferencer tokens\nstream:${STREAM_TOKEN}\n`);
    const { port, lines } = await start({ tokenFiles: [file] }, 50);
    const { inference } = clientsOf(port);
    expect(await failure(inference.detectKeypoints({}))).toBe(`${Code.UNAUTHENTICATED}:missing bearer token`);
    expect(await failure(inference.detectKeypoints({}, bearer(STREAM_TOKEN)))).toBe("ok");

    const rotated = "stream-token-after-rotation";
    await writeFile(file, `stream:${rotated}\n`);
    await expect.poll(() => failure(inference.detectKeypoints({}, bearer(rotated))), { timeout: 5000 }).toBe("ok");
    expect(await failure(inference.detectKeypoints({}, bearer(STREAM_TOKEN)))).toBe(`${Code.UNAUTHENTICATED}:bearer token refused`);

    // An emptied or garbled file does not open the server, nor lock everyone out.
    await writeFile(file, "stream:short\n");
    await expect.poll(() => lines.some((line) => line["msg"] === "token files changed but cannot be used; the tokens in force stay"), { timeout: 5000 }).toBe(true);
    expect(await failure(inference.detectKeypoints({}, bearer(rotated)))).toBe("ok");
    expect(JSON.stringify(lines)).not.toContain(rotated);
  });

  it("warns at start when POSELOOP_INSECURE lets other hosts in without tokens or TLS, and when tokens travel in clear", async () => {
    const insecure = await start({ host: "0.0.0.0", insecure: true });
    const warning = insecure.lines.find((line) => line["level"] === "warn");
    expect(warning?.["msg"]).toMatch(/^POSELOOP_INSECURE: serving 0\.0\.0\.0:\d+ with neither tokens nor TLS: anyone who reaches this port can call every method$/);
    const clear = await start({ host: "0.0.0.0", tokens: [{ role: Role.STREAM, token: STREAM_TOKEN }] });
    expect(clear.lines.find((line) => line["level"] === "warn")?.["msg"]).toMatch(/without TLS: bearer tokens travel in clear text/);
    expect(JSON.stringify(clear.lines)).not.toContain(STREAM_TOKEN);
  });

  it("says at start that a server without tokens or TLS serves this machine only", async () => {
    const { lines } = await start({});
    expect(lines.map((line) => line["msg"])).toContainEqual(expect.stringMatching(/no tokens and no TLS configured: serving this machine only \(127\.0\.0\.1\)/));
  });
});

describe("TLS", () => {
  let pki: TestPki;
  let serverCa: string;
  let clientCa: string;
  beforeAll(async () => {
    pki = await createTestPki();
    serverCa = await pki.ca("server-ca");
    clientCa = await pki.ca("client-ca");
  });
  afterAll(async () => pki.remove());

  const trusting = async (ca: string, client?: { cert: string; key: string }) =>
    credentials.createSsl(await readFile(ca), client === undefined ? null : await readFile(client.key), client === undefined ? null : await readFile(client.cert));

  it("serves TLS clients that trust its CA and no plaintext ones", async () => {
    const server = await pki.issue("server-ca", "tls-server");
    const { port } = await start({ tls: { certFile: server.cert, keyFile: server.key }, tokens: [{ role: Role.STREAM, token: STREAM_TOKEN }] });
    expect(await failure(clientsOf(port, await trusting(serverCa)).inference.detectKeypoints({}, bearer(STREAM_TOKEN)))).toBe("ok");
    expect(await failure(clientsOf(port).inference.detectKeypoints({}, { ...bearer(STREAM_TOKEN), timeoutMs: 2000 }))).toMatch(/^(14|4):/);
    expect(await failure(clientsOf(port, await trusting(clientCa)).inference.detectKeypoints({}, { ...bearer(STREAM_TOKEN), timeoutMs: 2000 }))).toMatch(/^(14|4):/);
  });

  it("with a client CA, serves only clients that present a certificate it issued", async () => {
    const server = await pki.issue("server-ca", "mtls-server");
    const client = await pki.issue("client-ca", "mtls-client", { server: false });
    const stranger = await pki.issue("server-ca", "mtls-stranger", { server: false });
    const { port } = await start({ tls: { certFile: server.cert, keyFile: server.key, clientCaFile: clientCa } });
    expect(await failure(clientsOf(port, await trusting(serverCa, client)).inference.detectKeypoints({}))).toBe("ok");
    expect(await failure(clientsOf(port, await trusting(serverCa)).inference.detectKeypoints({}, { timeoutMs: 2000 }))).toMatch(/^(14|4):/);
    expect(await failure(clientsOf(port, await trusting(serverCa, stranger)).inference.detectKeypoints({}, { timeoutMs: 2000 }))).toMatch(/^(14|4):/);
  });

  it("picks up renewed certificate files without a restart, and keeps serving through a broken rotation", async () => {
    const first = await pki.issue("server-ca", "reload-first");
    const renewed = await pki.issue("client-ca", "reload-renewed");
    const certFile = join(pki.dir, "serving.pem");
    const keyFile = join(pki.dir, "serving.key");
    await copyFile(first.cert, certFile);
    await copyFile(first.key, keyFile);
    const lines: string[] = [];
    const tls = await ReloadingServerCredentials.create(
      { certFile, keyFile },
      { reloadIntervalMs: 50, logger: createJsonLogger({ write: (line) => lines.push(line) }) },
    );
    cleanups.push(() => tls.close());
    const server = new GrpcServer({ credentials: tls, tracing: false }).register(InferenceService, impl);
    const { port } = await server.listen("127.0.0.1", 0);
    cleanups.push(() => server.forceShutdown());
    // A new channel per call, closed after it: a connection opened before a reload keeps its old certificate.
    const call = async (ca: string) => {
      const client = createClient(InferenceService, `127.0.0.1:${port}`, { tracing: false, credentials: await trusting(ca) });
      try {
        return await failure(client.detectKeypoints({}, { timeoutMs: 2000 }));
      } finally {
        client.$close();
      }
    };
    expect(await call(serverCa)).toBe("ok");

    // A key that does not match the certificate (a rotation half done) is not taken.
    await copyFile(renewed.key, keyFile);
    await expect.poll(() => lines.some((line) => line.includes("the previous ones keep serving")), { timeout: 5000 }).toBe(true);
    expect(await call(serverCa)).toBe("ok");

    await copyFile(renewed.cert, certFile);
    await expect.poll(() => lines.some((line) => line.includes("tls certificates reloaded")), { timeout: 5000 }).toBe(true);
    expect(await call(clientCa)).toBe("ok");
    expect(await call(serverCa)).toMatch(/^(14|4):/);
  });

  it("names an mTLS caller by its certificate's CN, and a caller with a token by the token's digest", async () => {
    const server = await pki.issue("server-ca", "principal-server");
    const client = await pki.issue("client-ca", "ops-laptop", { server: false });
    const whoAmI: InferenceImpl = { ...impl, getServingModel: (_request, ctx) => ({ previous: [{ name: ctx.principal ?? "", version: ctx.role ?? "" }] }) };
    const call = async (port: number, headers = {}) =>
      (await clientsOf(port, await trusting(serverCa, client)).inference.getServingModel({}, headers)).previous[0];
    const tls = { certFile: server.cert, keyFile: server.key, clientCaFile: clientCa };
    const open = await startGrpcServer(settingsOf({ tls }), { logger: silentLogger, service: "inferencer", register: (s) => void s.register(InferenceService, whoAmI) });
    cleanups.push(() => open.stop());
    expect(await call(open.address.port)).toMatchObject({ name: "cert:ops-laptop", version: "" });

    const guarded = await startGrpcServer(settingsOf({ tls, tokens: [{ role: Role.ADMIN, token: ADMIN_TOKEN }] }), {
      logger: silentLogger,
      service: "inferencer",
      register: (s) => void s.register(InferenceService, whoAmI),
    });
    cleanups.push(() => guarded.stop());
    const named = await call(guarded.address.port, bearer(ADMIN_TOKEN));
    expect(named?.name).toMatch(/^token:[0-9a-f]{12}$/);
    expect(named?.name).not.toContain(ADMIN_TOKEN);
    expect(named?.version).toBe(Role.ADMIN);
  });

  it("disconnects a client that never finishes its TLS handshake", async () => {
    const issued = await pki.issue("server-ca", "handshake-server");
    const tls = await ReloadingServerCredentials.create({ certFile: issued.cert, keyFile: issued.key }, { handshakeTimeoutMs: 300 });
    cleanups.push(() => tls.close());
    const server = new GrpcServer({ credentials: tls, tracing: false, maxConnectionIdleMs: 0 }).register(InferenceService, impl);
    const { port } = await server.listen("127.0.0.1", 0);
    cleanups.push(() => server.forceShutdown());
    const started = Date.now();
    const socket = connect(port, "127.0.0.1");
    cleanups.push(() => void socket.destroy());
    socket.on("error", () => undefined);
    await new Promise<void>((resolve) => socket.on("close", () => resolve()));
    expect(Date.now() - started).toBeLessThan(3000);
    // The server still serves clients that do finish it.
    expect(await failure(clientsOf(port, await trusting(serverCa)).inference.detectKeypoints({}))).toBe("ok");
  });
});
