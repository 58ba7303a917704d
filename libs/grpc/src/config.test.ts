import { AppError, EnvReader, type Env } from "@poseloop/core";
import { describe, expect, it } from "vitest";
import { grpcServerSettingsFromEnv } from "./config.js";

function settings(env: Env) {
  const reader = new EnvReader(env);
  const result = grpcServerSettingsFromEnv(reader, "POSELOOP_TRAINER", 50052);
  reader.done("test configuration");
  return result;
}

function problems(env: Env): readonly string[] {
  try {
    settings(env);
    return [];
  } catch (error) {
    return AppError.from(error).problems;
  }
}

const TOKENS = "admin:admin-token-0123456789";

describe("grpcServerSettingsFromEnv: secure by default", () => {
  it("binds loopback only when neither tokens nor TLS are configured", () => {
    expect(settings({})).toMatchObject({ host: "127.0.0.1", port: 50052, tokens: [], tls: undefined });
  });

  it("stays on loopback by default when protected too, and serves the address a deployment names once tokens or TLS protect it", () => {
    expect(settings({ POSELOOP_TRAINER_TOKENS: TOKENS }).host).toBe("127.0.0.1");
    const listen = { POSELOOP_TRAINER_LISTEN: "0.0.0.0:50052" };
    expect(problems({ ...listen, POSELOOP_TRAINER_TOKENS: TOKENS })).toEqual([]);
    expect(problems({ ...listen, POSELOOP_TRAINER_TOKENS_FILE: "/run/secrets/tokens" })).toEqual([]);
    expect(problems({ ...listen, POSELOOP_TLS_CERT: "/tls/tls.crt", POSELOOP_TLS_KEY: "/tls/tls.key" })).toEqual([]);
    expect(settings({ ...listen, POSELOOP_TRAINER_TOKENS: TOKENS }).host).toBe("0.0.0.0");
  });

  it("refuses an address other hosts reach without tokens or TLS, naming the ways out", () => {
    const found = problems({ POSELOOP_TRAINER_LISTEN: "0.0.0.0:50052" });
    expect(found).toHaveLength(1);
    expect(found[0]).toMatch(/POSELOOP_TRAINER_LISTEN=0\.0\.0\.0:50052 lets other hosts call this service.*POSELOOP_TRAINER_TOKENS.*POSELOOP_TLS_CERT.*POSELOOP_INSECURE=1/);
    expect(problems({ POSELOOP_TRAINER_LISTEN: "10.0.0.7:50052" })).toHaveLength(1);
  });

  it("serves other hosts without protection only when told to with POSELOOP_INSECURE=1", () => {
    expect(settings({ POSELOOP_TRAINER_LISTEN: "0.0.0.0:50052", POSELOOP_INSECURE: "1" })).toMatchObject({ host: "0.0.0.0", insecure: true });
  });

  it("takes loopback addresses as they are", () => {
    for (const host of ["127.0.0.1", "localhost", "[::1]"]) expect(problems({ POSELOOP_TRAINER_LISTEN: `${host}:0` })).toEqual([]);
  });

  it("reads TLS files and reports a half-configured pair", () => {
    expect(settings({ POSELOOP_TLS_CERT: "c.pem", POSELOOP_TLS_KEY: "k.pem", POSELOOP_TLS_CLIENT_CA: "ca.pem" }).tls).toEqual({ certFile: "c.pem", keyFile: "k.pem", clientCaFile: "ca.pem" });
    expect(problems({ POSELOOP_TLS_CERT: "c.pem" })).toContain("POSELOOP_TLS_CERT and POSELOOP_TLS_KEY go together: set both or neither");
    expect(problems({ POSELOOP_TLS_CLIENT_CA: "ca.pem" })).toContain("POSELOOP_TLS_CLIENT_CA (mutual TLS) needs POSELOOP_TLS_CERT and POSELOOP_TLS_KEY");
  });

  it("reports a malformed token list without echoing it", () => {
    const found = problems({ POSELOOP_TRAINER_TOKENS: "superuser:abcdefghijklmnopqrstuvwxyz" });
    expect(found).toHaveLength(1);
    expect(found[0]).not.toContain("abcdefghijklmnopqrstuvwxyz");
  });
});

describe("grpcServerSettingsFromEnv: connection limits", () => {
  it("keeps connections alive for 2 min pings, 30 min of age and 5 min idle by default", () => {
    expect(settings({})).toMatchObject({ keepaliveTimeMs: 120_000, maxConnectionAgeMs: 1_800_000, maxConnectionIdleMs: 300_000 });
  });

  it("reads POSELOOP_GRPC_KEEPALIVE, _MAX_CONNECTION_AGE and _MAX_CONNECTION_IDLE as durations; 0 turns one off", () => {
    expect(settings({ POSELOOP_GRPC_KEEPALIVE: "30s", POSELOOP_GRPC_MAX_CONNECTION_AGE: "2h", POSELOOP_GRPC_MAX_CONNECTION_IDLE: "0" })).toMatchObject({
      keepaliveTimeMs: 30_000,
      maxConnectionAgeMs: 7_200_000,
      maxConnectionIdleMs: 0,
    });
  });

  it("reports values too small to be meant, and ones that are not durations, all at once", () => {
    const found = problems({ POSELOOP_GRPC_KEEPALIVE: "1s", POSELOOP_GRPC_MAX_CONNECTION_AGE: "5s", POSELOOP_GRPC_MAX_CONNECTION_IDLE: "soon" });
    expect(found).toHaveLength(3);
    expect(found.join("\n")).toMatch(/POSELOOP_GRPC_KEEPALIVE must be 0 \(off\) or at least 10000 ms/);
    expect(found.join("\n")).toMatch(/POSELOOP_GRPC_MAX_CONNECTION_AGE/);
    expect(found.join("\n")).toMatch(/POSELOOP_GRPC_MAX_CONNECTION_IDLE="?soon"? is not a duration/);
  });
});
