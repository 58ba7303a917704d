import { AppError, Code } from "@poseloop/core";
import { describe, expect, it } from "vitest";
import { ExitCode, exitCodeOf, formatError, UsageError } from "./error-report.js";

describe("error reports", () => {
  it("prints one line, then every problem indented, without repeating them in the message", () => {
    const error = AppError.invalid("experiment", ["TRAIN.LR must be positive", "MODEL.IMAGE_SIZE must be two integers"]);
    expect(formatError(error)).toEqual([
      "poseloop: invalid experiment (2 problems)",
      "  - TRAIN.LR must be positive",
      "  - MODEL.IMAGE_SIZE must be two integers",
    ]);
  });

  it("points usage errors at the command's help", () => {
    expect(formatError(new UsageError("--cfg is required", "train"))).toEqual(["poseloop: --cfg is required", "Run 'poseloop train --help' for usage."]);
    expect(formatError(new UsageError('unknown command "trian"'))).toEqual(['poseloop: unknown command "trian"', "Run 'poseloop --help' for usage."]);
  });

  it("never prints a stack", () => {
    const lines = formatError(new TypeError("boom"));
    expect(lines).toEqual(["poseloop: boom"]);
    expect(formatError(new AppError(Code.INTERNAL, "internal error"))[0]).toBe("poseloop: the service failed with an internal error (its log has the details)");
    expect(formatError(new AppError(Code.INTERNAL, "internal error (ref 3f9a1c2b7d4e)"))[0]).toBe(
      "poseloop: the service failed with an internal error (its log has the details under ref 3f9a1c2b7d4e)",
    );
  });

  it("exits 2 for usage errors, 130 for an interrupt, 1 for anything else", () => {
    expect(exitCodeOf(new UsageError("x"))).toBe(ExitCode.USAGE);
    expect(exitCodeOf(new AppError(Code.CANCELLED, "operation cancelled"), true)).toBe(ExitCode.INTERRUPTED);
    expect(exitCodeOf(new AppError(Code.CANCELLED, "operation cancelled"), false)).toBe(ExitCode.FAILURE);
    expect(exitCodeOf(new AppError(Code.NOT_FOUND, "job x not found"))).toBe(ExitCode.FAILURE);
  });
});
