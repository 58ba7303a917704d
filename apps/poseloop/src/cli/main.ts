#!/usr/bin/env node
// The poseloop executable: wires the process (argv, stdio, environment, Ctrl-C) to runCli.
import { runCli } from "./run-cli.js";

const controller = new AbortController();
let firstSignalAt: number | undefined;
const onSignal = (): void => {
  // The first Ctrl-C lets the command wind down (stop following a job, finish the video file); a second
  // one leaves at once. Signals within a moment of the first count as the same one: under bin/poseloop.mjs
  // a Ctrl-C reaches this process both from the terminal and forwarded by the launcher.
  const now = Date.now();
  if (firstSignalAt === undefined) {
    firstSignalAt = now;
    controller.abort();
  } else if (now - firstSignalAt > 300) {
    process.exit(130);
  }
};
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);
// `poseloop jobs | head -1` closes the pipe early: that is not an error.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(0);
  throw error;
});

process.exitCode = await runCli(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  signal: controller.signal,
});
process.off("SIGINT", onSignal);
process.off("SIGTERM", onSignal);
