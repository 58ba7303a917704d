import { ScalarType, toJson, type DescField, type DescMessage, type JsonValue, type MessageShape } from "@bufbuild/protobuf";
import type { LineWriter } from "./cli-io.js";

/**
 * A message in the proto3 JSON mapping (camelCase names, enum names, 64-bit integers as strings), the
 * shape grpcurl and every other proto tool print, with two changes for people and scripts reading it:
 * - fields at their zero value are printed too, so a skeleton edge from keypoint 0 has its `fromIndex`
 *   and `jq '.jobs[]'` finds an empty array rather than nothing;
 * - `float` fields print the shortest decimal that is the same float32 (0.9, not 0.8999999761581421,
 *   which is how that float32 reads as a double). `double` fields print as JavaScript prints them.
 */
export function protoJson<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): JsonValue {
  return shortenFloat32Fields(schema, toJson(schema, message, { alwaysEmitImplicit: true }));
}

/**
 * The shortest decimal that reads back as the same float32 as `value` (a float32 widened to a double).
 * Nine significant digits always suffice for a float32, so one of the tries matches.
 */
export function shortestFloat32(value: number): number {
  if (!Number.isFinite(value)) return value;
  const single = Math.fround(value);
  for (let precision = 1; precision <= 9; precision++) {
    const candidate = Number(value.toPrecision(precision));
    if (Math.fround(candidate) === single) return candidate;
  }
  return value;
}

/** `json` (the JSON of a `schema` message) with every float32 field, however deep, shortened. */
function shortenFloat32Fields(schema: DescMessage, json: JsonValue): JsonValue {
  if (schema.typeName === "google.protobuf.FloatValue") return typeof json === "number" ? shortestFloat32(json) : json;
  // Other well-known types have JSON forms of their own (a timestamp is a string); none holds a float.
  if (schema.typeName.startsWith("google.protobuf.") || !isObject(json)) return json;
  const shortened: Record<string, JsonValue> = { ...json };
  for (const field of schema.fields) {
    const value = json[field.jsonName];
    if (value !== undefined) shortened[field.jsonName] = shortenField(field, value);
  }
  return shortened;
}

function shortenField(field: DescField, value: JsonValue): JsonValue {
  const float = (item: JsonValue): JsonValue => (typeof item === "number" ? shortestFloat32(item) : item);
  switch (field.fieldKind) {
    case "scalar":
      return field.scalar === ScalarType.FLOAT ? float(value) : value;
    case "message":
      return shortenFloat32Fields(field.message, value);
    case "list":
      if (!Array.isArray(value)) return value;
      if (field.listKind === "scalar") return field.scalar === ScalarType.FLOAT ? value.map(float) : value;
      if (field.listKind === "message") return value.map((item) => shortenFloat32Fields(field.message, item));
      return value;
    case "map": {
      if (!isObject(value)) return value;
      const shorten =
        field.mapKind === "scalar" && field.scalar === ScalarType.FLOAT
          ? float
          : field.mapKind === "message"
            ? (item: JsonValue) => shortenFloat32Fields(field.message, item)
            : undefined;
      return shorten === undefined ? value : Object.fromEntries(Object.entries(value).map(([key, item]) => [key, shorten(item)]));
    }
    case "enum":
      return value;
  }
}

function isObject(value: JsonValue): value is { [key: string]: JsonValue } {
  return typeof value === "object" && value !== null && !Array.isArray(value);
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
