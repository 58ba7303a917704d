import { describe, expect, it } from "vitest";
import { natsUrlSecrets, redactNatsUrl, redactSecrets } from "./url-secrets.js";

describe("NATS URL secrets", () => {
  it("hides the password of a URL, or a token given as its user part, and keeps the rest readable", () => {
    expect(redactNatsUrl("nats://poseloop:hunter2-secret@nats:4222")).toBe("nats://poseloop:***@nats:4222");
    expect(redactNatsUrl("tls://s3cret-token@nats.example:4222")).toBe("tls://***@nats.example:4222");
    expect(redactNatsUrl("nats://nats:4222")).toBe("nats://nats:4222");
  });

  it("finds the secrets of every URL, raw and percent-decoded", () => {
    expect(natsUrlSecrets(["nats://a:p%40ss-word@n1:4222", "nats://tok-tok-tok@n2:4222", "nats://n3:4222"])).toEqual(["p%40ss-word", "p@ss-word", "tok-tok-tok"]);
  });

  it("removes each secret from a log line, however the line escaped it", () => {
    const line = JSON.stringify({ msg: "listening", bus_location: "nats://app:q\"uote-secret@nats:4222", err: "auth q\"uote-secret" });
    const redacted = redactSecrets(line, ["q\"uote-secret"]);
    expect(redacted).not.toContain("uote-secret");
    expect(JSON.parse(redacted)).toMatchObject({ bus_location: "nats://app:***@nats:4222" });
  });
});
