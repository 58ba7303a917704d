#!/usr/bin/env node
// `npm start`: the demo of the whole loop on the embedded bus, no server and no configuration (see
// apps/poseloop/src/demo/demo.ts): train, publish int8, hot-swap into a live synthetic stream, summary and an
// annotated video in ./out. `npm start -- --serve` only runs the two services until Ctrl-C. With
// POSELOOP_NATS_URL set, both use that NATS deployment instead. Run after `tsc -b` (npm start does both).
import { spawn } from "node:child_process";
import { resolve } from "node:path";
import { createInterface } from "node:readline";

// The repository root: the demo reads experiments/ there and writes out/ and .poseloop/ beside them.
const root = resolve(import.meta.dirname, "../../..");
const { runDemo, serviceEntry } = await import("../dist/index.js");

if (!process.argv.includes("--serve")) {
  const controller = new AbortController();
  process.once("SIGINT", () => controller.abort());
  process.once("SIGTERM", () => controller.abort());
  try {
    process.exitCode = await runDemo({ root, env: process.env, stdout: process.stdout, signal: controller.signal });
  } catch (error) {
    process.stderr.write(`\nposeloop demo: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = controller.signal.aborted ? 130 : 1;
  }
  process.exit();
}
const env = { POSELOOP_BUS_DIR: resolve(root, ".poseloop/bus"), ...process.env };
const services = [
  { name: "trainer", entry: serviceEntry("trainer"), color: 36 },
  { name: "inferencer", entry: serviceEntry("inferencer"), color: 35 },
];

const children = [];
const ready = services.map(
  (service) =>
    new Promise((resolveReady, rejectReady) => {
      const child = spawn(process.execPath, [resolve(root, service.entry)], { env, stdio: ["ignore", "pipe", "pipe"] });
      children.push(child);
      const prefix = `\x1b[${service.color}m${service.name.padEnd(10)}\x1b[0m`;
      const onLine = (line) => {
        let record;
        try {
          record = JSON.parse(line);
        } catch {
          process.stdout.write(`${prefix} ${line}\n`);
          return;
        }
        const fields = Object.entries(record)
          .filter(([key]) => !["time", "name", "msg", "level"].includes(key))
          .map(([key, value]) => `${key}=${typeof value === "string" ? value : JSON.stringify(value)}`)
          .join(" ");
        process.stdout.write(`${prefix} ${record.level === "info" ? "" : `${String(record.level).toUpperCase()} `}${record.msg} ${fields}\n`);
        if (record.msg === "listening") resolveReady({ ...service, address: record.address, bus: record.bus, location: record.bus_location });
      };
      createInterface({ input: child.stdout }).on("line", onLine);
      createInterface({ input: child.stderr }).on("line", onLine);
      child.once("exit", (code) => rejectReady(new Error(`${service.name} exited with code ${code}`)));
    }),
);

let stopping = false;
function stopAll(code) {
  if (stopping) return;
  stopping = true;
  let left = children.filter((child) => child.exitCode === null).length;
  if (left === 0) process.exit(code);
  for (const child of children) {
    if (child.exitCode !== null) continue;
    child.once("exit", () => {
      left -= 1;
      if (left === 0) process.exit(code);
    });
    child.kill("SIGTERM");
  }
}
process.on("SIGINT", () => stopAll(0));
process.on("SIGTERM", () => stopAll(0));

try {
  const started = await Promise.all(ready);
  const bus = started[0].bus === "nats" ? `NATS at ${started[0].location}` : `the embedded bus in ${started[0].location}`;
  process.stdout.write(`\nPoseLoop is running on ${bus}:\n`);
  for (const service of started) process.stdout.write(`  ${service.name.padEnd(10)} grpc://${service.address}  (health and reflection: grpcurl -plaintext ${service.address.replace("0.0.0.0", "127.0.0.1")} list)\n`);
  process.stdout.write("Press Ctrl-C to stop both.\n\n");
  for (const child of children) child.once("exit", (code) => !stopping && (process.stdout.write(`a service exited with code ${code}; stopping\n`), stopAll(1)));
} catch (error) {
  process.stderr.write(`PoseLoop did not start: ${error.message}\n`);
  stopAll(1);
}
