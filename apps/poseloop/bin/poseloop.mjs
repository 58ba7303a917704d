#!/usr/bin/env node
// Runs the built CLI (dist/) when there is one; in a source checkout without a build, runs the TypeScript
// sources through tsx with the "@poseloop/source" export condition, so workspace packages resolve to
// their sources too. Conditions are a node flag, so that takes a child process; it gets the terminal,
// its exit code comes back, and signals sent to this process are passed on to it.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const dist = new URL("../dist/cli/main.js", import.meta.url);
if (existsSync(fileURLToPath(dist)) && process.env.POSELOOP_CLI_FROM_SOURCE !== "1") {
  await import(dist.href);
} else {
  const entry = fileURLToPath(new URL("../src/cli/main.ts", import.meta.url));
  const tsx = import.meta.resolve("tsx");
  const child = spawn(process.execPath, ["--conditions=@poseloop/source", "--import", tsx, entry, ...process.argv.slice(2)], { stdio: "inherit" });
  // The child decides what a signal means (wind down, or leave at once on a second one).
  for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => child.kill(signal));
  child.on("exit", (code, signal) => {
    process.exitCode = code ?? (signal === "SIGINT" ? 130 : 1);
  });
}
