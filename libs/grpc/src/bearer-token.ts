import { createHash, timingSafeEqual } from "node:crypto";
import type { Metadata } from "@grpc/grpc-js";
import { AppError, Code } from "@poseloop/core";

/**
 * The two ways a call fails the token check, as the status message of its UNAUTHENTICATED: clients tell
 * "you sent none" (pass one) from "yours is wrong" (fix it) by these.
 */
export const BearerTokenFailure = {
  MISSING: "missing bearer token",
  REFUSED: "bearer token refused",
} as const;
export type BearerTokenFailure = (typeof BearerTokenFailure)[keyof typeof BearerTokenFailure];

/**
 * Checks the `authorization: Bearer <token>` header of calls against the one token a service was started
 * with. An empty token turns the check off. Built once per service: the expected token is kept only as
 * its SHA-256 digest.
 */
export class BearerTokenCheck {
  readonly #expected: Buffer | undefined;

  constructor(token: string) {
    this.#expected = token === "" ? undefined : sha256(token);
  }

  /** Whether calls need a token at all. */
  get enabled(): boolean {
    return this.#expected !== undefined;
  }

  /**
   * Throws UNAUTHENTICATED with BearerTokenFailure.MISSING when the call carries no bearer token, and with
   * BearerTokenFailure.REFUSED when it carries another one.
   */
  check(metadata: Metadata): void {
    if (this.#expected === undefined) return;
    const given = bearerToken(metadata);
    if (given === undefined) throw new AppError(Code.UNAUTHENTICATED, BearerTokenFailure.MISSING);
    // Digests have one length whatever the tokens', so the compare takes the same time for every wrong
    // token and tells an attacker neither how long the token is nor how much of it matched.
    if (!timingSafeEqual(sha256(given), this.#expected)) throw new AppError(Code.UNAUTHENTICATED, BearerTokenFailure.REFUSED);
  }
}

/**
 * The token of an `authorization: Bearer <token>` header; undefined when there is none, the scheme is
 * another or the token is empty. The scheme is case-insensitive (RFC 9110 §11.1): "bearer x" counts.
 */
export function bearerToken(metadata: Metadata): string | undefined {
  const header = metadata.get("authorization")[0];
  if (typeof header !== "string") return undefined;
  const match = /^bearer(?:[ \t]+(.*))?$/is.exec(header.trim());
  const token = match?.[1]?.trim() ?? "";
  return token === "" ? undefined : token;
}

function sha256(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}
