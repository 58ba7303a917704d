import { describe, expect, it } from "vitest";
import { captureIo } from "../testing/capture-io.js";
import { runCli, splitCommand } from "./run-cli.js";

describe("runCli command line", () => {
  it("finds the command after global options and their values", () => {
    expect(splitCommand(["--trainer", "h:1", "--json", "jobs", "--limit", "5"])).toEqual({ name: "jobs", rest: ["--trainer", "h:1", "--json", "--limit", "5"] });
    expect(splitCommand(["--trainer=h:1", "watch", "j"])).toEqual({ name: "watch", rest: ["--trainer=h:1", "j"] });
    expect(splitCommand(["--help"])).toEqual({ name: undefined, rest: ["--help"] });
  });

  it("prints the command list for --help and exits 0; with no arguments prints it to stderr and exits 2", async () => {
    const help = captureIo();
    expect(await runCli(["--help"], help)).toBe(0);
    for (const command of ["train", "jobs", "watch", "cancel", "checkpoints", "publish", "rollback", "models", "stream", "detect"]) {
      expect(help.stdoutText()).toMatch(new RegExp(`^  ${command} `, "m"));
    }
    const bare = captureIo();
    expect(await runCli([], bare)).toBe(2);
    expect(bare.stderrText()).toContain("Usage: poseloop <command>");
  });

  it.each(["train", "jobs", "watch", "cancel", "checkpoints", "publish", "rollback", "models", "stream", "detect"])(
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
    [["trian"], 'poseloop: unknown command "trian"'],
    [["jobs", "--bogus"], "poseloop: unknown option --bogus"],
    [["train", "--cfg"], "poseloop: option --cfg needs a value"],
    [["train"], "poseloop: --cfg is required"],
    [["watch"], "poseloop: missing argument: poseloop watch <job>"],
    [["cancel", "a", "b"], 'poseloop: unexpected argument "b"'],
    [["jobs", "--limit", "0"], "poseloop: --limit must be between 1 and 500, got 0"],
    [["jobs", "--state", "sleeping"], 'poseloop: unknown job state "sleeping"'],
    [["jobs", "--timeout=-1"], "poseloop: --timeout must be greater than 0, got -1"],
    [["jobs", "--timeout", "-1"], 'poseloop: option --timeout needs a value (write --timeout=-1 for one that starts with "-")'],
    [["jobs", "--json=yes"], "poseloop: option --json takes no value"],
    [["jobs", "--trainer", "nohost"], 'poseloop: --trainer: address "nohost" is not host:port'],
    [["publish", "job-without-checkpoint"], 'poseloop: "job-without-checkpoint" is not JOB/CHECKPOINT'],
    [["train", "--resume", "j", "--lr", "0.1"], "poseloop: --resume continues job j as it was configured; only --epochs can change (not --lr)"],
    [["stream"], "poseloop: give a video file, an image folder or --synthetic"],
    [["stream", "--synthetic", "--out", "x.avi"], "poseloop: --out x.avi: write a video as .mp4, .m4v, .mov, .mkv, .gif"],
    [["detect", "x.jpg", "--out", "x.bmp"], "poseloop: --out x.bmp: write the annotated image as .png or .jpg"],
  ])("refuses %j with exit code 2 and one clear line", async (argv, message) => {
    const io = captureIo();
    expect(await runCli(argv, io)).toBe(2);
    const lines = io.stderrText().trimEnd().split("\n");
    expect(lines[0]).toContain(message);
    expect(lines.at(-1)).toMatch(/^Run 'poseloop( \w+)? --help' for usage\.$/);
    expect(io.stdoutText()).toBe("");
  });
});
