import { parseArgs } from "node:util";
import { didYouMean, type Env } from "@poseloop/core";
import { type InferenceClient, type TrainerClient } from "@poseloop/client";
import type { LineWriter } from "./cli-io.js";
import { UsageError } from "./error-report.js";

/** One option of a command, as `node:util` parseArgs takes it plus what its help shows. */
export interface OptionSpec {
  readonly type: "string" | "boolean";
  readonly short?: string;
  readonly multiple?: boolean;
  /** The value's name in the help ("FILE", "N"). */
  readonly value?: string;
  readonly help: string;
}

export type OptionSpecs = Readonly<Record<string, OptionSpec>>;

/** What a command gets to run with. */
export interface CommandContext {
  readonly args: ParsedArgs;
  readonly out: LineWriter;
  readonly err: LineWriter;
  /** --json: one JSON document on stdout, or JSON lines for streams. */
  readonly json: boolean;
  /** Aborts on Ctrl-C. */
  readonly signal: AbortSignal;
  readonly env: Env;
  /** An absolute path for a path given on the command line. */
  resolvePath(path: string): string;
  /** The clients, made on first use (so `poseloop stream` never dials the trainer) and closed after the command. */
  trainer(): TrainerClient;
  inference(): InferenceClient;
}

export interface Command {
  readonly name: string;
  /** One line for the command list. */
  readonly summary: string;
  /** What follows "poseloop <name>" in the usage line, e.g. "<job>" or "--cfg FILE [options]". */
  readonly synopsis: string;
  readonly description?: string;
  readonly examples?: readonly string[];
  readonly options: OptionSpecs;
  /** Allowed number of positional arguments. */
  readonly positionals: { readonly min: number; readonly max: number };
  run(ctx: CommandContext): Promise<number>;
}

/** A parsed command line with typed getters. */
export class ParsedArgs {
  /** The command whose help a usage error points at; undefined: the top level. */
  readonly command: string | undefined;
  readonly positionals: readonly string[];
  readonly #values: Readonly<Record<string, string | boolean | (string | boolean)[] | undefined>>;

  constructor(command: string | undefined, values: Record<string, string | boolean | (string | boolean)[] | undefined>, positionals: readonly string[]) {
    this.command = command;
    this.#values = values;
    this.positionals = positionals;
  }

  has(name: string): boolean {
    const value = this.#values[name];
    return value !== undefined && !(Array.isArray(value) && value.length === 0);
  }

  string(name: string): string | undefined {
    const value = this.#values[name];
    if (Array.isArray(value)) return value.at(-1) as string | undefined;
    return typeof value === "string" ? value : undefined;
  }

  strings(name: string): string[] {
    const value = this.#values[name];
    if (value === undefined) return [];
    return (Array.isArray(value) ? value : [value]).filter((item): item is string => typeof item === "string");
  }

  flag(name: string): boolean {
    return this.#values[name] === true;
  }

  /** A required string option. */
  need(name: string): string {
    const value = this.string(name);
    if (value === undefined || value === "") throw new UsageError(`--${name} is required`, this.command);
    return value;
  }

  /** An optional integer option, at least `min`. */
  int(name: string, min = 0, max = Number.MAX_SAFE_INTEGER): number | undefined {
    const raw = this.string(name);
    if (raw === undefined) return undefined;
    return parseInteger(raw, `--${name}`, this.command, min, max);
  }

  /** An optional number option within [min, max] (exclusive of min when `minExclusive`). */
  number(name: string, range: { min?: number; max?: number; minExclusive?: boolean } = {}): number | undefined {
    const raw = this.string(name);
    if (raw === undefined) return undefined;
    return parseNumber(raw, `--${name}`, this.command, range);
  }
}

export function parseInteger(raw: string, what: string, command: string | undefined, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const value = /^[-+]?\d+$/.test(raw.trim()) ? Number(raw) : Number.NaN;
  if (!Number.isSafeInteger(value)) throw new UsageError(`${what} must be an integer, got "${raw}"`, command);
  if (value < min || value > max) {
    throw new UsageError(`${what} must be ${max === Number.MAX_SAFE_INTEGER ? `at least ${min}` : `between ${min} and ${max}`}, got ${value}`, command);
  }
  return value;
}

export function parseNumber(raw: string, what: string, command: string | undefined, range: { min?: number; max?: number; minExclusive?: boolean } = {}): number {
  const value = raw.trim() === "" ? Number.NaN : Number(raw);
  if (!Number.isFinite(value)) throw new UsageError(`${what} must be a number, got "${raw}"`, command);
  const { min, max, minExclusive } = range;
  if (min !== undefined && (minExclusive === true ? value <= min : value < min)) {
    throw new UsageError(`${what} must be ${minExclusive === true ? "greater than" : "at least"} ${min}, got ${raw}`, command);
  }
  if (max !== undefined && value > max) throw new UsageError(`${what} must be at most ${max}, got ${raw}`, command);
  return value;
}

/** "KEY=VALUE" split at the first "="; a usage error without one or with an empty key. */
export function parseKeyValue(raw: string, what: string, command: string): [string, string] {
  const at = raw.indexOf("=");
  if (at <= 0) throw new UsageError(`${what} takes KEY=VALUE, got "${raw}"`, command);
  const key = raw.slice(0, at).trim();
  if (key === "" || /\s/.test(key)) throw new UsageError(`${what} takes KEY=VALUE with a key without spaces, got "${raw}"`, command);
  return [key, raw.slice(at + 1)];
}

/**
 * Parses a command's arguments strictly (unknown options, missing values and extra positionals are usage
 * errors with messages of our own, not parseArgs' long ones).
 */
export function parseCommandLine(command: Command, globalOptions: OptionSpecs, argv: readonly string[]): ParsedArgs {
  const args = parseOptions({ ...globalOptions, ...command.options }, argv, command.name);
  // --help and --version answer whatever else the command line lacks.
  if (args.flag("help") || args.flag("version")) return args;
  const count = args.positionals.length;
  if (count < command.positionals.min) throw new UsageError(`missing argument: poseloop ${command.name} ${command.synopsis}`, command.name);
  if (count > command.positionals.max) {
    const extra = args.positionals.slice(command.positionals.max).map((p) => `"${p}"`).join(", ");
    throw new UsageError(`unexpected argument${count - command.positionals.max === 1 ? "" : "s"} ${extra}`, command.name);
  }
  return args;
}

/**
 * Parses options and positionals strictly; a usage error points at `command`'s help (the top level's when
 * undefined). Below the command line, where no command was named, that is the global options alone.
 */
export function parseOptions(options: OptionSpecs, argv: readonly string[], command: string | undefined): ParsedArgs {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: [...argv],
      options: Object.fromEntries(
        Object.entries(options).map(([name, spec]) => [
          name,
          { type: spec.type, ...(spec.short === undefined ? {} : { short: spec.short }), ...(spec.multiple === true ? { multiple: true } : {}) },
        ]),
      ),
      strict: true,
      allowPositionals: true,
    });
  } catch (error) {
    throw new UsageError(parseArgsMessage(error, Object.keys(options)), command);
  }
  return new ParsedArgs(command, parsed.values, parsed.positionals);
}

function parseArgsMessage(error: unknown, optionNames: readonly string[]): string {
  const code = (error as { code?: unknown }).code;
  const message = error instanceof Error ? error.message : String(error);
  const option = /'(-{1,2}[^' ]+)/.exec(message)?.[1];
  switch (code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION": {
      if (option === undefined) return `unknown option ${message}`;
      const suggestion = option.startsWith("--") ? didYouMean(option.slice(2).split("=")[0] ?? "", optionNames) : undefined;
      return `unknown option ${option}${suggestion === undefined ? "" : ` (did you mean --${suggestion}?)`}`;
    }
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE":
      if (message.includes("ambiguous")) return `option ${option ?? ""} needs a value (write ${option ?? "--option"}=-1 for one that starts with "-")`;
      return message.includes("argument missing") ? `option ${option ?? ""} needs a value` : `option ${option ?? ""} takes no value`;
    default:
      return message;
  }
}

/** The --help text of a command. */
export function commandHelp(command: Command, globalOptions: OptionSpecs): string[] {
  const lines = [`Usage: poseloop ${command.name}${command.synopsis === "" ? "" : ` ${command.synopsis}`}`, "", command.summary];
  if (command.description !== undefined) lines.push("", ...command.description.split("\n"));
  if (Object.keys(command.options).length > 0) lines.push("", "Options:", ...optionLines(command.options));
  lines.push("", "Global options:", ...optionLines(globalOptions));
  if (command.examples !== undefined && command.examples.length > 0) lines.push("", "Examples:", ...command.examples.map((e) => `  ${e}`));
  return lines;
}

export function optionLines(options: OptionSpecs): string[] {
  const entries = Object.entries(options).map(([name, spec]) => {
    const flag = `${spec.short === undefined ? "    " : `-${spec.short}, `}--${name}${spec.value === undefined ? "" : ` ${spec.value}`}`;
    return [flag, spec.help] as const;
  });
  const width = Math.min(30, Math.max(...entries.map(([flag]) => flag.length)));
  return entries.map(([flag, help]) => (flag.length > width ? `  ${flag}\n  ${" ".repeat(width)}  ${help}` : `  ${flag.padEnd(width)}  ${help}`));
}
