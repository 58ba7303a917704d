import { AppError, EnvReader, type Env } from "@poseloop/core";
import { describe, expect, it } from "vitest";
import { busOptionsFromEnv } from "./config.js";

function settings(env: Env) {
  const reader = new EnvReader(env);
  const result = busOptionsFromEnv(reader, "test");
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

describe("busOptionsFromEnv: NATS credentials and TLS", () => {
  const url = { POSELOOP_NATS_URL: "tls://nats:4222" };

  it("reads credentials and TLS files, never their contents", () => {
    expect(settings({ ...url, POSELOOP_NATS_CREDS: "/run/secrets/nats.creds", POSELOOP_NATS_TLS_CA: "/run/secrets/ca.pem" }).natsSecurity).toEqual({
      credsFile: "/run/secrets/nats.creds",
      tlsCaFile: "/run/secrets/ca.pem",
    });
    expect(settings({ ...url, POSELOOP_NATS_USER: "trainer", POSELOOP_NATS_PASSWORD_FILE: "/p" }).natsSecurity).toEqual({ user: "trainer", passwordFile: "/p" });
    expect(settings({}).natsSecurity).toEqual({});
  });

  it("reports settings that cannot work together, all at once", () => {
    expect(problems({ ...url, POSELOOP_NATS_CREDS: "/c", POSELOOP_NATS_NKEY_SEED_FILE: "/s", POSELOOP_NATS_USER: "u", POSELOOP_NATS_TLS_CERT: "/c.pem" })).toEqual([
      "POSELOOP_NATS_CREDS and POSELOOP_NATS_NKEY_SEED_FILE are two ways to sign in: set one",
      "POSELOOP_NATS_USER and POSELOOP_NATS_PASSWORD_FILE go together: set both or neither",
      "POSELOOP_NATS_TLS_CERT and POSELOOP_NATS_TLS_KEY go together: set both or neither",
    ]);
    expect(problems({ POSELOOP_NATS_TOKEN_FILE: "/t" })).toEqual([expect.stringContaining("need POSELOOP_NATS_URL")]);
  });

  it("never quotes the password of a bad URL in its problem", () => {
    expect(problems({ POSELOOP_NATS_URL: "http://app:hunter2-secret@nats:4222" }).join(" ")).not.toContain("hunter2-secret");
  });
});
