import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { AppError, Code, EnvReader, parseDurationMs, POSELOOP_ENV_VARIABLES, unknownVariables } from "@poseloop/core";

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

describe("EnvReader.names", () => {
  it("records every name asked for, set or not", () => {
    const r = new EnvReader({ POSELOOP_A: "1" });
    r.int("POSELOOP_A");
    r.string("POSELOOP_B", { default: "" });
    r.listenAddress("POSELOOP_C", { default: "0.0.0.0:1" });
    expect([...r.names]).toEqual(["POSELOOP_A", "POSELOOP_B", "POSELOOP_C"]);
  });
});

describe("unknownVariables", () => {
  it("lists the prefixed names nobody knows, with the closest known one", () => {
    const env = { POSELOOP_NATS_ULR: "nats://x:4222", POSELOOP_NATS_URL: "", POSELOOP_ZZZ: "1", OTEL_X: "1", PATH: "/bin" };
    expect(unknownVariables(env, "POSELOOP_", POSELOOP_ENV_VARIABLES)).toEqual([
      { name: "POSELOOP_NATS_ULR", suggestion: "POSELOOP_NATS_URL" },
      { name: "POSELOOP_ZZZ", suggestion: undefined },
    ]);
  });

  it("looks at names only, so a loader's reads of values stay its own", () => {
    const read: string[] = [];
    const env = new Proxy<Record<string, string>>({ POSELOOP_TYPO: "1" }, {
      get: (target, name) => {
        if (typeof name === "string") read.push(name);
        return Reflect.get(target, name) as unknown;
      },
    });
    expect(unknownVariables(env, "POSELOOP_", [])).toHaveLength(1);
    expect(read).toEqual([]);
  });
});

describe("POSELOOP_ENV_VARIABLES", () => {
  // The services' config tests check their loaders against the list; the CLI, the SDK, the demo and the
  // benchmarks read plain env["POSELOOP_…"], so their sources are the record of what they read.
  it("names every POSELOOP_* variable the CLI, the SDK, the demo and the benchmarks mention", () => {
    const root = fileURLToPath(new URL("../../../", import.meta.url));
    const sources = ["apps/poseloop/src", "apps/poseloop/bin", "libs/client/src", "bench"]
      .flatMap((dir) => readdirSync(join(root, dir), { recursive: true, encoding: "utf8" }).map((name) => join(root, dir, name)))
      .filter((path) => /\.(ts|mjs|js)$/.test(path) && !/\.test\.ts$/.test(path));
    const mentioned = new Set(sources.flatMap((path) => readFileSync(path, "utf8").match(/\bPOSELOOP_[A-Z0-9_]*[A-Z0-9]\b/g) ?? []));
    mentioned.delete("POSELOOP_ENV_VARIABLES"); // the list's own name, where a source imports it
    expect(mentioned).toContain("POSELOOP_TRAINER_ADDR");
    expect([...mentioned].filter((name) => !POSELOOP_ENV_VARIABLES.includes(name)).sort()).toEqual([]);
  });
});
