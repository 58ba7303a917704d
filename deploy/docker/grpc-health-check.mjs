#!/usr/bin/env node
// A container health check over grpc.health.v1 (what Kubernetes' grpc probes ask), for Docker and Compose,
// which cannot speak gRPC themselves. Exit 0: healthy; 1: not.
//
//   node bin/grpc-health-check.mjs [--service NAME] [--live] [--timeout-ms N] HOST:PORT
//
// By default only SERVING passes (readiness). With --live any answer passes, NOT_SERVING included: the
// inferencer answers NOT_SERVING until its first model is loaded, and that process is alive, not broken.
//
// It speaks the two one-field health messages by hand so that it depends on @grpc/grpc-js alone, which
// every service image holds, and not on the shape of the services' own libraries.
import { Client, credentials } from "@grpc/grpc-js";
import { parseArgs } from "node:util";

const STATUS = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"];

const { values, positionals } = parseArgs({
  options: {
    service: { type: "string", default: "" },
    live: { type: "boolean", default: false },
    "timeout-ms": { type: "string", default: "3000" },
  },
  allowPositionals: true,
  strict: true,
});
const target = positionals[0];
const timeoutMs = Number(values["timeout-ms"]);
if (target === undefined || positionals.length !== 1 || !Number.isFinite(timeoutMs) || timeoutMs <= 0) {
  process.stderr.write("usage: grpc-health-check.mjs [--service NAME] [--live] [--timeout-ms N] HOST:PORT\n");
  process.exit(2);
}

/** HealthCheckRequest { string service = 1; } */
function encodeRequest({ service }) {
  const bytes = Buffer.from(service, "utf8");
  if (bytes.length === 0) return Buffer.alloc(0);
  return Buffer.concat([Buffer.from([0x0a]), encodeVarint(bytes.length), bytes]);
}

/** HealthCheckResponse { ServingStatus status = 1; } (other fields skipped) */
function decodeResponse(buffer) {
  let status = 0;
  let offset = 0;
  while (offset < buffer.length) {
    const [key, afterKey] = decodeVarint(buffer, offset);
    const wireType = key & 7;
    offset = afterKey;
    if (wireType === 0) {
      const [value, next] = decodeVarint(buffer, offset);
      if (key >>> 3 === 1) status = value;
      offset = next;
    } else if (wireType === 2) {
      const [length, next] = decodeVarint(buffer, offset);
      offset = next + length;
    } else {
      throw new Error(`unexpected protobuf wire type ${wireType}`);
    }
  }
  return { status };
}

function encodeVarint(value) {
  const bytes = [];
  while (value > 0x7f) {
    bytes.push((value & 0x7f) | 0x80);
    value >>>= 7;
  }
  bytes.push(value);
  return Buffer.from(bytes);
}

function decodeVarint(buffer, offset) {
  let value = 0;
  let shift = 0;
  for (;;) {
    if (offset >= buffer.length) throw new Error("truncated varint");
    const byte = buffer[offset++];
    value += (byte & 0x7f) * 2 ** shift;
    if ((byte & 0x80) === 0) return [value, offset];
    shift += 7;
  }
}

const client = new Client(target, credentials.createInsecure());
client.makeUnaryRequest(
  "/grpc.health.v1.Health/Check",
  encodeRequest,
  decodeResponse,
  { service: values.service },
  { deadline: Date.now() + timeoutMs },
  (error, response) => {
    client.close();
    if (error) {
      process.stderr.write(`${target}: ${error.message}\n`);
      process.exit(1);
    }
    const status = STATUS[response.status] ?? String(response.status);
    const healthy = status === "SERVING" || (values.live && status === "NOT_SERVING");
    process.stdout.write(`${target}${values.service === "" ? "" : ` ${values.service}`}: ${status}\n`);
    process.exit(healthy ? 0 : 1);
  },
);
