import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { POSELOOP_ENV_VARIABLES } from "@poseloop/core";
import { describe, expect, it } from "vitest";
import { captureIo } from "../testing/capture-io.js";
import { runCli, splitCommand } from "./run-cli.js";

const ROOT = fileURLToPath(new URL("../../../../", import.meta.url));

describe("runCli command line", () => {
  it("finds the command after global options and their values", () => {
    expect(splitCommand(["--trainer", "h:1", "--json", "jobs", "--limit", "5"])).toEqual({ name: "jobs", rest: ["--trainer", "h:1", "--json", "--limit", "5"] });
    expect(splitCommand(["--trainer=h:1", "watch", "j"])).toEqual({ name: "watch", rest: ["--trainer=h:1", "j"] });
    expect(splitCommand(["--help"])).toEqual({ name: undefined, rest: ["--help"] });
  });

  it("prints the command list for --help and exits 0; with no arguments prints it to stderr and exits 2", async () => {
    const help = captureIo();
    expect(await runCli(["--help"], help)).toBe(0);
    for (const command of ["train", "jobs", "watch", "cancel", "checkpoints", "results", "trainers", "publish", "rollback", "models", "stream", "detect"]) {
      expect(help.stdoutText()).toMatch(new RegExp(`^  ${command} `, "m"));
    }
    const bare = captureIo();
    expect(await runCli([], bare)).toBe(2);
    expect(bare.stderrText()).toContain("Usage: poseloop <command>");
  });

  it.each(["train", "jobs", "watch", "cancel", "checkpoints", "results", "trainers", "publish", "rollback", "models", "stream", "detect"])(
    "has --help for %s, listing its options and the global ones",
    async (command) => {
      const io = captureIo();
      expect(await runCli([command, "--help"], io)).toBe(0);
      expect(io.stdoutText()).toMatch(new RegExp(`^Usage: poseloop ${command}`));
      expect(io.stdoutText()).toContain("--inferencer HOST:PORT");
      const viaHelp = captureIo();
      expect(await runCli(["help", command], viaHelp)).toBe(0);
      expect(viaHelp.stdoutText()).toBe(io.stdoutText());
    },
  );

  it.each([
    [["trian"], `poseloop: unknown command "trian" (did you mean 'train'?)`],
    [["help", "wacth"], `poseloop: unknown command "wacth" (did you mean 'watch'?)`],
    [["frobnicate"], 'poseloop: unknown command "frobnicate"\n'],
    [["train", "--epcohs", "3"], "poseloop: unknown option --epcohs (did you mean --epochs?)"],
    [["train", "--batchsize=4"], "poseloop: unknown option --batchsize (did you mean --batch-size?)"],
    [["--verison"], "poseloop: unknown option --verison (did you mean --version?)"],
    [["jobs", "--bogus"], "poseloop: unknown option --bogus\n"],
    [["train", "--cfg"], "poseloop: option --cfg needs a value"],
    [["train"], "poseloop: --cfg is required"],
    [["watch"], "poseloop: missing argument: poseloop watch <job>"],
    [["cancel", "a", "b"], 'poseloop: unexpected argument "b"'],
    [["trainers", "t1"], 'poseloop: unexpected argument "t1"'],
    [["jobs", "--limit", "0"], "poseloop: --limit must be between 1 and 500, got 0"],
    [["jobs", "--state", "sleeping"], 'poseloop: unknown job state "sleeping"'],
    [["jobs", "--timeout=-1"], "poseloop: --timeout must be greater than 0, got -1"],
    [["jobs", "--timeout", "-1"], 'poseloop: option --timeout needs a value (write --timeout=-1 for one that starts with "-")'],
    [["jobs", "--json=yes"], "poseloop: option --json takes no value"],
    [["jobs", "--trainer", "nohost"], 'poseloop: --trainer: address "nohost" is not host:port'],
    [["publish", "job-without-checkpoint"], 'poseloop: "job-without-checkpoint" is not JOB/CHECKPOINT'],
    [["train", "--resume", "j", "--lr", "0.1"], "poseloop: --resume continues job j as it was configured; only --epochs can change (not --lr)"],
    [["stream"], "poseloop: give a video file, a URL, a camera device, an image folder or --synthetic"],
    [["stream", "--synthetic", "--out", "x.avi"], "poseloop: --out x.avi: write a video as .mp4, .m4v, .mov, .mkv, .gif"],
    [["detect", "x.jpg", "--out", "x.bmp"], "poseloop: --out x.bmp: write the annotated image as .png or .jpg"],
  ])("refuses %j with exit code 2 and one clear line", async (argv, message) => {
    const io = captureIo();
    expect(await runCli(argv, io)).toBe(2);
    const lines = io.stderrText().trimEnd().split("\n");
    expect(`${lines[0]}\n`).toContain(message);
    expect(lines.at(-1)).toMatch(/^Run 'poseloop( \w+)? --help' for usage\.$/);
    expect(io.stdoutText()).toBe("");
  });
});

describe("poseloop --version", () => {
  it.each([["--version"], ["-V"], ["jobs", "--version"], ["watch", "--version"]])("%j prints the package's version on stdout and exits 0", async (...argv) => {
    const { version } = JSON.parse(await readFile(join(ROOT, "apps/poseloop/package.json"), "utf8")) as { version: string };
    const io = captureIo();
    expect(await runCli(argv, io)).toBe(0);
    expect(io.stdoutText()).toBe(`poseloop ${version}\n`);
    expect(io.stderrText()).toBe("");
  });
});

describe("POSELOOP_* environment variables", () => {
  it("warns once for each variable nothing reads, naming the one it probably meant, and goes on", async () => {
    const io = captureIo({ env: { POSELOOP_TRAINER_ADR: "h:1", POSELOOP_FROBNICATE: "1", POSELOOP_TOKEN: "t", PATH: "/usr/bin" } });
    expect(await runCli(["--version"], io)).toBe(0);
    expect(io.stderrText()).toBe(
      "poseloop: warning: unknown environment variable POSELOOP_FROBNICATE\n" +
        "poseloop: warning: unknown environment variable POSELOOP_TRAINER_ADR (did you mean POSELOOP_TRAINER_ADDR?)\n",
    );
    expect(io.stdoutText()).toMatch(/^poseloop \S+\n$/);
  });

  it("says nothing of the CLI's own variables nor of those of the services run from the same shell", async () => {
    const env = Object.fromEntries(POSELOOP_ENV_VARIABLES.map((name) => [name, "x"]));
    const io = captureIo({ env });
    expect(await runCli(["--version"], io)).toBe(0);
    expect(io.stderrText()).toBe("");
  });
});
