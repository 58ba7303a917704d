import { createHash, timingSafeEqual } from "node:crypto";
import type { PeerCertificate } from "node:tls";
import type { DescMethod } from "@bufbuild/protobuf";
import type { Metadata } from "@grpc/grpc-js";
import { AppError, Code } from "@poseloop/core";
import { BearerTokenFailure, bearerToken } from "./bearer-token.js";

/**
 * What a token may do. `stream`: send frames (StreamKeypoints, DetectKeypoints); `train`: submit and follow
 * training jobs, and cancel its own; `admin`: everything, including changing which model serves and
 * cancelling anyone's jobs.
 */
export const Role = {
  STREAM: "stream",
  TRAIN: "train",
  ADMIN: "admin",
} as const;
export type Role = (typeof Role)[keyof typeof Role];

export const ROLES: readonly Role[] = Object.freeze([Role.STREAM, Role.TRAIN, Role.ADMIN]);

/**
 * Who is calling, as the access check found out. `principal` names the caller without revealing a secret, so
 * it may be stored (a job's submitter) and logged: "token:" and the first 12 hex digits of the SHA-256 of the
 * caller's bearer token, or "cert:" and the subject CN of a verified client certificate (mutual TLS) when no
 * token is checked.
 */
export interface Caller {
  /** The role of the caller's token; undefined on an open call or a server without tokens. */
  readonly role: Role | undefined;
  /** Undefined when the call carries neither a checked token nor a verified client certificate. */
  readonly principal: string | undefined;
}

/** One accepted token and the role it grants. */
export interface RoleToken {
  readonly role: Role;
  readonly token: string;
}

/**
 * Who may call a method: a role (an `admin` token may call everything), or "open" for calls anyone may make
 * (health checks, which load balancers send without credentials).
 */
export type MethodAccess = Role | "open";

/** Method access keyed by "package.Service/Method" (see accessKey). */
export type MethodAccessMap = Readonly<Record<string, MethodAccess>>;

/** The key of a method in a MethodAccessMap: "poseloop.trainer.v1.TrainerService/StartTraining". */
export function accessKey(method: DescMethod): string {
  return `${method.parent.typeName}/${method.name}`;
}

const HEALTH_SERVICE = "grpc.health.v1.Health";
const REFLECTION_SERVICE = "grpc.reflection.v1.ServerReflection";

/**
 * The access check of a server, applied to every call in one place (GrpcServer) before its handler runs.
 * With no tokens it lets everything through: such a server binds loopback only (see grpcServerSettingsFromEnv).
 * With tokens: health is open, reflection needs any valid token (it lists what a server serves), a method in
 * the map needs its role, and a method the map does not name needs `admin` — a method added later without a
 * decision stays closed rather than open.
 */
export class AccessControl {
  /** SHA-256 of each token, with its role. */
  #tokens: readonly { digest: Buffer; role: Role }[];
  readonly #methods: MethodAccessMap;

  constructor(tokens: readonly RoleToken[], methods: MethodAccessMap = {}) {
    this.#tokens = digests(tokens);
    this.#methods = methods;
  }

  /**
   * Accepts `tokens` from now on (a rotated token file). An empty list is refused: turning checks off is a
   * restart with another configuration, never a side effect of an emptied file.
   */
  replaceTokens(tokens: readonly RoleToken[]): void {
    const next = digests(tokens);
    if (next.length === 0) throw new AppError(Code.INVALID_ARGUMENT, "no tokens: the previous ones stay in force");
    this.#tokens = next;
  }

  /** Whether calls need a token at all. */
  get enabled(): boolean {
    return this.#tokens.length > 0;
  }

  /** The access a method needs. */
  required(method: DescMethod): MethodAccess | "any" {
    const service = method.parent.typeName;
    if (service === HEALTH_SERVICE) return "open";
    if (service === REFLECTION_SERVICE) return "any";
    return this.#methods[accessKey(method)] ?? Role.ADMIN;
  }

  /**
   * Throws UNAUTHENTICATED (BearerTokenFailure texts) when the call has no token or an unknown one, and
   * PERMISSION_DENIED naming the role needed when its token's role is not enough. Returns the caller: its
   * token's role and principal, or on an open call or a server without tokens no role and the principal of
   * `certificate` (the verified client certificate of a mutual TLS connection), if any.
   */
  check(method: DescMethod, metadata: Metadata, certificate?: PeerCertificate): Caller {
    const unchecked: Caller = { role: undefined, principal: certificatePrincipal(certificate) };
    if (!this.enabled) return unchecked;
    const required = this.required(method);
    if (required === "open") return unchecked;
    const caller = this.authenticate(metadata);
    if (required === "any" || caller.role === Role.ADMIN || caller.role === required) return caller;
    throw new AppError(Code.PERMISSION_DENIED, `${method.name} needs a token with the ${required} role`);
  }

  /** The role and principal of the call's token; throws UNAUTHENTICATED when there is none or it is not one of ours. */
  authenticate(metadata: Metadata): Caller & { readonly role: Role; readonly principal: string } {
    const given = bearerToken(metadata);
    if (given === undefined) throw new AppError(Code.UNAUTHENTICATED, BearerTokenFailure.MISSING);
    const digest = sha256(given);
    let role: Role | undefined;
    // Every token is compared, digest against digest (one length whatever the tokens'), so the time taken
    // tells neither which token matched, nor how long any is, nor how much of one matched.
    for (const candidate of this.#tokens) {
      if (timingSafeEqual(digest, candidate.digest)) role ??= candidate.role;
    }
    if (role === undefined) throw new AppError(Code.UNAUTHENTICATED, BearerTokenFailure.REFUSED);
    return { role, principal: principalOfDigest(digest) };
  }
}

/**
 * The principal of a bearer token: "token:" and the first 12 hex digits of its SHA-256. It depends on that
 * token alone, so it stays the same across restarts and rotations of other tokens; 48 bits of a digest tell
 * tokens apart without helping anyone guess one.
 */
export function tokenPrincipal(token: string): string {
  return principalOfDigest(sha256(token));
}

/**
 * The principal of a verified client certificate: "cert:" and its subject CN (CNs joined by "," when it has
 * several); undefined without a certificate or a CN.
 */
export function certificatePrincipal(certificate: PeerCertificate | undefined): string | undefined {
  // Node gives an array where the subject repeats CN, whatever its types say.
  const cn: unknown = certificate?.subject?.CN;
  const names = (Array.isArray(cn) ? cn : [cn]).filter((name): name is string => typeof name === "string" && name !== "");
  return names.length === 0 ? undefined : `cert:${names.join(",")}`;
}

function principalOfDigest(digest: Buffer): string {
  return `token:${digest.toString("hex").slice(0, 12)}`;
}

/**
 * Parses "role:token,role:token" (or the same one per line, as in a token file; blank lines and lines
 * starting with # are skipped). Returns the tokens and the problems found, never echoing a token: `source`
 * names where the text came from.
 */
export function parseRoleTokens(text: string, source: string): { tokens: RoleToken[]; problems: string[] } {
  const tokens: RoleToken[] = [];
  const problems: string[] = [];
  const entries = text
    .split(/[,\n]/)
    .map((entry) => entry.trim())
    .filter((entry) => entry !== "" && !entry.startsWith("#"));
  entries.forEach((entry, index) => {
    const colon = entry.indexOf(":");
    const role = colon < 0 ? "" : entry.slice(0, colon).trim();
    const token = colon < 0 ? "" : entry.slice(colon + 1).trim();
    if (!(ROLES as readonly string[]).includes(role)) {
      problems.push(`${source} entry ${index + 1} must be role:token with a role of ${ROLES.join(", ")}`);
    } else if (token.length < 16 || /[^\x21-\x7e]/.test(token)) {
      // Short tokens are guessable; tokens with blanks or control characters cannot travel in a header.
      problems.push(`${source} entry ${index + 1} (${role}): a token must be at least 16 visible characters, without blanks`);
    } else {
      tokens.push({ role: role as Role, token });
    }
  });
  return { tokens, problems };
}

function digests(tokens: readonly RoleToken[]): { digest: Buffer; role: Role }[] {
  return tokens.filter((t) => t.token !== "").map((t) => ({ digest: sha256(t.token), role: t.role }));
}

function sha256(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}
