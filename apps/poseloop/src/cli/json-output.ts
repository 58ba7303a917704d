import { toJson, type DescMessage, type JsonValue, type MessageShape } from "@bufbuild/protobuf";
import type { LineWriter } from "./cli-io.js";

/**
 * A message in the proto3 JSON mapping (camelCase names, enum names, 64-bit integers as strings, fields
 * at their zero value left out), the shape grpcurl and every other proto tool print.
 */
export function protoJson<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): JsonValue {
  return toJson(schema, message);
}

/** One JSON document (a command's whole answer), indented for reading. */
export function writeJsonDocument(out: LineWriter, value: unknown): void {
  out.line(JSON.stringify(value, jsonReplacer, 2));
}

/** One JSON line of a stream (`jq -c`, line-by-line readers). */
export function writeJsonLine(out: LineWriter, value: unknown): void {
  out.line(JSON.stringify(value, jsonReplacer));
}

function jsonReplacer(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? value.toString() : value;
}
