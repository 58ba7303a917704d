import { describe, expect, it } from "vitest";
import { AppError, Code, EnvReader, parseDurationMs } from "@poseloop/core";

describe("EnvReader", () => {
  it("reports every problem at once", () => {
    const r = new EnvReader({ PORT: "abc", LEVEL: "loud", TIMEOUT: "5 parsecs", URL: "http://x" });
    r.int("PORT", { default: 1 });
    r.oneOf("LEVEL", ["debug", "info"] as const);
    r.durationMs("TIMEOUT", { default: 5 });
    r.url("URL", { protocols: ["nats:"] });
    r.string("REQUIRED");
    let error: unknown;
    try {
      r.done("test config");
    } catch (e) {
      error = e;
    }
    expect(AppError.is(error, Code.INVALID_ARGUMENT)).toBe(true);
    const problems = (error as AppError).problems;
    expect(problems).toHaveLength(5);
    expect(problems.join("\n")).toMatch(/PORT="abc" is not an integer/);
    expect(problems.join("\n")).toMatch(/LEVEL="loud" must be one of debug, info/);
    expect(problems.join("\n")).toMatch(/TIMEOUT/);
    expect(problems.join("\n")).toMatch(/URL="http:\/\/x" must use nats:/);
    expect(problems.join("\n")).toMatch(/REQUIRED is required/);
    expect((error as AppError).message).toMatch(/^invalid test config \(5 problems\)/);
  });

  it("applies defaults to unset and blank variables and checks ranges", () => {
    const r = new EnvReader({ BLANK: "  ", SMALL: "-1", ON: "yes" });
    expect(r.int("UNSET", { default: 7 })).toBe(7);
    expect(r.string("BLANK", { default: "d" })).toBe("d");
    expect(r.bool("ON")).toBe(true);
    r.int("SMALL", { min: 0 });
    expect(r.problems).toEqual(["SMALL=-1 is below the minimum 0"]);
  });

  it("parses listen addresses and durations", () => {
    const r = new EnvReader({ A: "127.0.0.1:0", B: "[::1]:50051", C: "nope" });
    expect(r.listenAddress("A")).toEqual({ host: "127.0.0.1", port: 0 });
    expect(r.listenAddress("B")).toEqual({ host: "::1", port: 50051 });
    r.listenAddress("C");
    expect(r.problems).toHaveLength(1);
    expect(parseDurationMs("1.5s")).toBe(1500);
    expect(parseDurationMs("2m")).toBe(120_000);
    expect(parseDurationMs("250")).toBe(250);
    expect(parseDurationMs("soon")).toBeUndefined();
  });
});
