import { createHash } from "node:crypto";
import type { PeerCertificate } from "node:tls";
import { Metadata } from "@grpc/grpc-js";
import { AppError, Code } from "@poseloop/core";
import { Health } from "@poseloop/proto/grpc/health/v1/health_pb";
import { ServerReflection } from "@poseloop/proto/grpc/reflection/v1/reflection_pb";
import { TrainerService } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { describe, expect, it } from "vitest";
import { AccessControl, accessKey, certificatePrincipal, parseRoleTokens, Role, tokenPrincipal } from "./access-control.js";

const STREAM = "stream-token-0123456789";
const TRAIN = "train-token-0123456789";
const ADMIN = "admin-token-0123456789";
const OLD_ADMIN = "admin-token-before-rotation";

const method = (name: string) => {
  const found = TrainerService.methods.find((m) => m.name === name);
  if (found === undefined) throw new Error(name);
  return found;
};
const access = new AccessControl(
  [{ role: Role.STREAM, token: STREAM }, { role: Role.TRAIN, token: TRAIN }, { role: Role.ADMIN, token: ADMIN }, { role: Role.ADMIN, token: OLD_ADMIN }],
  { [accessKey(method("ListJobs"))]: Role.TRAIN, [accessKey(method("PublishCheckpoint"))]: Role.ADMIN },
);

function outcome(name: string, token?: string, target = method(name)): string {
  const metadata = new Metadata();
  if (token !== undefined) metadata.set("authorization", `Bearer ${token}`);
  try {
    return `ok:${access.check(target, metadata).role ?? "open"}`;
  } catch (error) {
    const appError = AppError.from(error);
    return `${appError.code === Code.UNAUTHENTICATED ? "UNAUTHENTICATED" : appError.code === Code.PERMISSION_DENIED ? "PERMISSION_DENIED" : "other"}:${appError.message}`;
  }
}

describe("AccessControl", () => {
  it("refuses calls without a token or with an unknown one, in the BearerTokenFailure words", () => {
    expect(outcome("ListJobs")).toBe("UNAUTHENTICATED:missing bearer token");
    expect(outcome("ListJobs", "nope")).toBe("UNAUTHENTICATED:bearer token refused");
    expect(outcome("ListJobs", TRAIN.slice(0, -1))).toBe("UNAUTHENTICATED:bearer token refused");
  });

  it("lets each token do what its role allows, and names the role it lacks otherwise", () => {
    expect(outcome("ListJobs", TRAIN)).toBe("ok:train");
    expect(outcome("ListJobs", STREAM)).toBe("PERMISSION_DENIED:ListJobs needs a token with the train role");
    expect(outcome("PublishCheckpoint", TRAIN)).toBe("PERMISSION_DENIED:PublishCheckpoint needs a token with the admin role");
    expect(outcome("PublishCheckpoint", ADMIN)).toBe("ok:admin");
    expect(outcome("ListJobs", ADMIN)).toBe("ok:admin");
  });

  it("accepts every configured token of a role, so a token can be rotated without downtime", () => {
    expect(outcome("PublishCheckpoint", OLD_ADMIN)).toBe("ok:admin");
  });

  it("keeps a method nobody gave a role to admin-only", () => {
    expect(outcome("CancelJob", TRAIN)).toBe("PERMISSION_DENIED:CancelJob needs a token with the admin role");
  });

  it("leaves health checks open and asks any valid token for reflection", () => {
    const check = Health.methods[0];
    const reflect = ServerReflection.methods[0];
    if (check === undefined || reflect === undefined) throw new Error("no methods");
    expect(outcome("Check", undefined, check)).toBe("ok:open");
    expect(outcome("ServerReflectionInfo", undefined, reflect)).toBe("UNAUTHENTICATED:missing bearer token");
    expect(outcome("ServerReflectionInfo", STREAM, reflect)).toBe("ok:stream");
  });

  it("checks nothing without tokens", () => {
    const open = new AccessControl([], {});
    expect(open.enabled).toBe(false);
    expect(open.check(method("PublishCheckpoint"), new Metadata())).toEqual({ role: undefined, principal: undefined });
  });
});

describe("the caller's principal", () => {
  const withToken = (token: string): Metadata => {
    const metadata = new Metadata();
    metadata.set("authorization", `Bearer ${token}`);
    return metadata;
  };
  /** What grpc-js hands over for a verified client certificate; only the subject matters here. */
  const certificate = (cn: unknown): PeerCertificate => ({ subject: { CN: cn } }) as unknown as PeerCertificate;

  it("names a token's caller by the first 12 hex digits of the token's SHA-256, never by the token", () => {
    const caller = access.check(method("ListJobs"), withToken(TRAIN));
    const expected = `token:${createHash("sha256").update(TRAIN).digest("hex").slice(0, 12)}`;
    expect(caller).toEqual({ role: Role.TRAIN, principal: expected });
    expect(tokenPrincipal(TRAIN)).toBe(expected);
    expect(caller.principal).not.toContain(TRAIN);
    expect(access.check(method("ListJobs"), withToken(ADMIN)).principal).not.toBe(expected);
  });

  it("keeps a token's principal through restarts and rotations of other tokens", () => {
    const before = access.check(method("ListJobs"), withToken(TRAIN)).principal;
    const rotated = new AccessControl([{ role: Role.ADMIN, token: "admin-token-after-rotation" }, { role: Role.TRAIN, token: TRAIN }], {
      [accessKey(method("ListJobs"))]: Role.TRAIN,
    });
    expect(rotated.check(method("ListJobs"), withToken(TRAIN)).principal).toBe(before);
    rotated.replaceTokens([{ role: Role.TRAIN, token: TRAIN }]);
    expect(rotated.check(method("ListJobs"), withToken(TRAIN)).principal).toBe(before);
  });

  it("prefers the token to a client certificate, and names the certificate's CN where no token is checked", () => {
    expect(access.check(method("ListJobs"), withToken(TRAIN), certificate("ci-runner")).principal).toBe(tokenPrincipal(TRAIN));
    const check = Health.methods[0];
    if (check === undefined) throw new Error("no methods");
    expect(access.check(check, new Metadata(), certificate("ci-runner"))).toEqual({ role: undefined, principal: "cert:ci-runner" });
    const open = new AccessControl([]);
    expect(open.check(method("CancelJob"), withToken(TRAIN), certificate("ci-runner"))).toEqual({ role: undefined, principal: "cert:ci-runner" });
  });

  it("names nobody on a server without tokens whose client shows no certificate, even when it sends a token", () => {
    // Without tokens to check it against, a token proves nothing: a principal from it could be made up.
    expect(new AccessControl([]).check(method("CancelJob"), withToken(TRAIN)).principal).toBeUndefined();
  });

  it("reads the subject CN of a certificate, several of them joined, and nothing from one without a CN", () => {
    expect(certificatePrincipal(certificate("trainer-ops"))).toBe("cert:trainer-ops");
    expect(certificatePrincipal(certificate(["a", "b"]))).toBe("cert:a,b");
    expect(certificatePrincipal(certificate(undefined))).toBeUndefined();
    expect(certificatePrincipal(certificate(""))).toBeUndefined();
    expect(certificatePrincipal(undefined)).toBeUndefined();
  });
});

describe("parseRoleTokens", () => {
  it("reads role:token lists from a variable or a file, skipping blanks and comments", () => {
    const { tokens, problems } = parseRoleTokens(`# rotated 2026-12\nstream:${STREAM}\n\n admin : ${ADMIN} ,train:${TRAIN}`, "TOKENS");
    expect(problems).toEqual([]);
    expect(tokens).toEqual([{ role: "stream", token: STREAM }, { role: "admin", token: ADMIN }, { role: "train", token: TRAIN }]);
  });

  it("reports bad entries without quoting the token", () => {
    const { problems } = parseRoleTokens(`root:${ADMIN},admin:short,${TRAIN}`, "POSELOOP_TRAINER_TOKENS");
    expect(problems).toHaveLength(3);
    expect(problems[0]).toContain("POSELOOP_TRAINER_TOKENS entry 1 must be role:token with a role of stream, train, admin");
    expect(problems[1]).toContain("at least 16 visible characters");
    expect(problems.join(" ")).not.toContain(ADMIN);
    expect(problems.join(" ")).not.toContain("short");
    expect(problems.join(" ")).not.toContain(TRAIN);
  });
});
