import { readFile } from "node:fs/promises";
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { credentials, type ChannelCredentials } from "@grpc/grpc-js";
import { AppError, Code, codeName, silentLogger } from "@poseloop/core";
import { createClient, Role, type CallOptions } from "@poseloop/grpc";
import { loadConfig as loadInferencerConfig, startInferencer, type InferencerProcess } from "@poseloop/inferencer";
import { Health } from "@poseloop/proto/grpc/health/v1/health_pb";
import { InferenceService } from "@poseloop/proto/poseloop/inference/v1/inference_pb";
import { TrainerService } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { makeTempDir } from "@poseloop/testkit";
import { loadConfig as loadTrainerConfig, startTrainer, type TrainerProcess } from "@poseloop/trainer";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPki, type TestPki } from "@poseloop/grpc/testing";

// Every RPC of both services, against the real services with tokens configured: who gets in, who is turned
// away and with which code. The role each RPC needs is written out here rather than read from the services'
// maps, so a change to a map (or a new RPC, which the coverage check catches) is a decision this file records.
const TOKENS = {
  [Role.STREAM]: "matrix-stream-token-0123456789",
  [Role.TRAIN]: "matrix-train-token-0123456789",
  [Role.ADMIN]: "matrix-admin-token-0123456789",
} as const;
const UNKNOWN_TOKEN = "matrix-unknown-token-0123456789";
const TOKEN_LIST = Object.entries(TOKENS)
  .map(([role, token]) => `${role}:${token}`)
  .join(",");

const TRAINER_ROLES: Readonly<Record<string, Role>> = {
  StartTraining: Role.TRAIN,
  WatchJob: Role.TRAIN,
  GetJob: Role.TRAIN,
  ListJobs: Role.TRAIN,
  CancelJob: Role.TRAIN,
  ResumeJob: Role.TRAIN,
  ListCheckpoints: Role.TRAIN,
  PublishCheckpoint: Role.ADMIN,
  GetTrainerInfo: Role.TRAIN,
  GetJobResults: Role.TRAIN,
  Evaluate: Role.TRAIN,
  StartSweep: Role.TRAIN,
  GetSweep: Role.TRAIN,
  ListSweeps: Role.TRAIN,
  WatchSweep: Role.TRAIN,
  CancelSweep: Role.TRAIN,
  GetPromotionPolicy: Role.TRAIN,
  SetPromotionPolicy: Role.ADMIN,
  ListPromotionDecisions: Role.TRAIN,
  ImportModel: Role.ADMIN,
  ExportModel: Role.TRAIN,
};
const INFERENCER_ROLES: Readonly<Record<string, Role>> = {
  StreamKeypoints: Role.STREAM,
  DetectKeypoints: Role.STREAM,
  GetServingModel: Role.STREAM,
  WatchServingModel: Role.STREAM,
};

/** Short deadlines: an auth refusal is immediate, and a call let through may fail however it likes. */
const CALL_TIMEOUT_MS = 5_000;
const AUTH_CODES: readonly Code[] = [Code.UNAUTHENTICATED, Code.PERMISSION_DENIED];

type AnyMethod = (request: unknown, options?: CallOptions) => unknown;

/**
 * Calls `method` with an empty request (a bidi call sends none and half-closes) and returns the status code it
 * ends with: OK when a unary call answers or a stream yields its first response, which is as far as it goes.
 * No call here starts real work: an empty request fails validation, names nothing that exists, or only reads.
 */
async function callCode(client: object, method: DescMethod, token: string | undefined): Promise<Code> {
  const fn = (client as Record<string, AnyMethod>)[method.localName];
  if (fn === undefined) throw new Error(`the client has no ${method.localName}`);
  const options: CallOptions = {
    timeoutMs: CALL_TIMEOUT_MS,
    ...(token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } }),
  };
  try {
    if (method.methodKind === "unary") {
      await fn.call(client, {}, options);
    } else {
      const input = method.methodKind === "bidi_streaming" ? (async function* () {})() : {};
      const responses = fn.call(client, input, options) as AsyncIterable<unknown>;
      for await (const _ of responses) break;
    }
    return Code.OK;
  } catch (error) {
    return AppError.from(error).code;
  }
}

/** The roles below `required` (admin may call everything). */
const rolesLacking = (required: Role): Role[] => Object.values(Role).filter((role) => role !== required && role !== Role.ADMIN);

interface Target {
  readonly name: string;
  readonly service: DescService;
  readonly roles: Readonly<Record<string, Role>>;
  client(): object;
  health(): { check(request: { service: string }, options?: CallOptions): Promise<unknown> };
}

let dir: { path: string; remove: () => Promise<void> };
let pki: TestPki;
let clientCa: string;
let serverCa: string;
let trainer: TrainerProcess;
let inferencer: InferencerProcess;
let inferencerCredentials: (client?: { cert: string; key: string }) => Promise<ChannelCredentials>;
let validClient: { cert: string; key: string };
const closers: (() => void)[] = [];

beforeAll(async () => {
  dir = await makeTempDir("poseloop-auth-matrix-");
  pki = await createTestPki();
  [serverCa, clientCa] = await Promise.all([pki.ca("server-ca"), pki.ca("client-ca")]);
  const [serverCert, client] = await Promise.all([pki.issue("server-ca", "inferencer"), pki.issue("client-ca", "matrix-client", { server: false })]);
  validClient = client;
  inferencerCredentials = async (clientCert) =>
    credentials.createSsl(
      await readFile(serverCa),
      clientCert === undefined ? null : await readFile(clientCert.key),
      clientCert === undefined ? null : await readFile(clientCert.cert),
    );
  const common = { POSELOOP_BUS_DIR: `${dir.path}/bus`, POSELOOP_LOG_LEVEL: "error", POSELOOP_DRAIN_TIMEOUT: "1s" };
  [trainer, inferencer] = await Promise.all([
    startTrainer(
      loadTrainerConfig({
        ...common,
        POSELOOP_TRAINER_LISTEN: "127.0.0.1:0",
        POSELOOP_TRAINER_TOKENS: TOKEN_LIST,
        POSELOOP_DATA_ROOT: `${dir.path}/data`,
        POSELOOP_WORK_DIR: `${dir.path}/work`,
        // Nothing submitted here may start training.
        POSELOOP_MAX_CONCURRENT_JOBS: "0",
        // GetTrainerInfo waits for the PyTorch probe; importing torch would take seconds of this suite's time.
        POSELOOP_PYTHON: "/bin/false",
      }),
      silentLogger,
    ),
    // The inferencer also asks for client certificates: its matrix runs over mutual TLS.
    startInferencer(
      loadInferencerConfig({
        ...common,
        POSELOOP_INFERENCER_LISTEN: "127.0.0.1:0",
        POSELOOP_INFERENCER_TOKENS: TOKEN_LIST,
        POSELOOP_TLS_CERT: serverCert.cert,
        POSELOOP_TLS_KEY: serverCert.key,
        POSELOOP_TLS_CLIENT_CA: clientCa,
      }),
      silentLogger,
    ),
  ]);
}, 60_000);

afterAll(async () => {
  for (const close of closers.splice(0)) close();
  await Promise.all([trainer?.stop(), inferencer?.stop()]);
  await pki?.remove();
  await dir?.remove();
});

function trainerTarget(): Target {
  const target = `127.0.0.1:${trainer.address.port}`;
  return {
    name: "trainer",
    service: TrainerService,
    roles: TRAINER_ROLES,
    client: () => track(createClient(TrainerService, target, { tracing: false, defaultTimeoutMs: CALL_TIMEOUT_MS })),
    health: () => track(createClient(Health, target, { tracing: false, defaultTimeoutMs: CALL_TIMEOUT_MS })),
  };
}

async function inferencerTarget(): Promise<Target> {
  const target = `127.0.0.1:${inferencer.address.port}`;
  const options = { tracing: false, defaultTimeoutMs: CALL_TIMEOUT_MS, credentials: await inferencerCredentials(validClient) };
  return {
    name: "inferencer",
    service: InferenceService,
    roles: INFERENCER_ROLES,
    client: () => track(createClient(InferenceService, target, options)),
    health: () => track(createClient(Health, target, options)),
  };
}

function track<C extends { $close(): void }>(client: C): C {
  closers.push(() => client.$close());
  return client;
}

describe.each([
  { name: "trainer", target: async () => trainerTarget() },
  { name: "inferencer (over mutual TLS)", target: inferencerTarget },
])("auth matrix: $name", ({ target: makeTarget }) => {
  let target: Target;
  let client: object;
  beforeAll(async () => {
    target = await makeTarget();
    client = target.client();
  });

  it("names the role of every RPC the service has, and of no other", () => {
    expect(Object.keys(target.roles).sort()).toEqual(target.service.methods.map((method) => method.name).sort());
  });

  it("checks every RPC: no token and an unknown token are UNAUTHENTICATED, a lesser role PERMISSION_DENIED, the right one passes", async () => {
    const rows = await Promise.all(
      target.service.methods.map(async (method) => {
        const required = target.roles[method.name];
        if (required === undefined) return { method: method.name, problem: "no role in this file's table" };
        const lacking = rolesLacking(required);
        const allowed = required === Role.ADMIN ? [Role.ADMIN] : [required, Role.ADMIN];
        const [anonymous, unknown, lesser, right] = await Promise.all([
          callCode(client, method, undefined),
          callCode(client, method, UNKNOWN_TOKEN),
          Promise.all(lacking.map(async (role) => [role, await callCode(client, method, TOKENS[role])] as const)),
          Promise.all(allowed.map(async (role) => [role, await callCode(client, method, TOKENS[role])] as const)),
        ]);
        return {
          method: method.name,
          anonymous: codeName(anonymous),
          unknown: codeName(unknown),
          lesser: Object.fromEntries(lesser.map(([role, code]) => [role, codeName(code)])),
          // Past the check, a call may fail for other reasons (an empty request, a job that does not exist).
          right: Object.fromEntries(right.map(([role, code]) => [role, AUTH_CODES.includes(code) ? codeName(code) : "not an auth error"])),
        };
      }),
    );
    const expected = target.service.methods.map((method) => {
      const required = target.roles[method.name] ?? Role.ADMIN;
      const allowed = required === Role.ADMIN ? [Role.ADMIN] : [required, Role.ADMIN];
      return {
        method: method.name,
        anonymous: "UNAUTHENTICATED",
        unknown: "UNAUTHENTICATED",
        lesser: Object.fromEntries(rolesLacking(required).map((role) => [role, "PERMISSION_DENIED"])),
        right: Object.fromEntries(allowed.map((role) => [role, "not an auth error"])),
      };
    });
    expect(rows).toEqual(expected);
  });

  it("keeps health checks open to callers without a token", async () => {
    const health = target.health();
    await expect(health.check({ service: "" })).resolves.toBeDefined();
  });
});

describe("mutual TLS (the inferencer, with a client CA)", () => {
  const healthCode = async (channel: ChannelCredentials): Promise<Code> => {
    const health = track(createClient(Health, `127.0.0.1:${inferencer.address.port}`, { tracing: false, credentials: channel }));
    try {
      await health.check({ service: "" }, { timeoutMs: CALL_TIMEOUT_MS });
      return Code.OK;
    } catch (error) {
      return AppError.from(error).code;
    }
  };

  it("serves a client certificate its CA issued", async () => {
    expect(codeName(await healthCode(await inferencerCredentials(validClient)))).toBe("OK");
  });

  it("refuses at the handshake an expired certificate of the right CA, one of another CA, and none", async () => {
    const [expired, stranger] = await Promise.all([
      pki.issue("client-ca", "expired-client", { server: false, expired: true }),
      pki.issue("server-ca", "stranger-client", { server: false }),
    ]);
    const codes = {
      expired: codeName(await healthCode(await inferencerCredentials(expired))),
      otherCa: codeName(await healthCode(await inferencerCredentials(stranger))),
      none: codeName(await healthCode(await inferencerCredentials())),
    };
    expect(codes).toEqual({ expired: "UNAVAILABLE", otherCa: "UNAVAILABLE", none: "UNAVAILABLE" });
  });
});
