import { resolve } from "node:path";
import { AppError, Code, didYouMean } from "@poseloop/core";
import { connectionsFromEnv, DEFAULT_INFERENCER_ADDRESS, DEFAULT_TRAINER_ADDRESS, type ConnectionOptions, InferenceClient, TrainerClient } from "@poseloop/client";
import { explainingAuthFailures, type TokenSource } from "./auth-failures.js";
import { unknownVariableWarnings } from "./cli-environment.js";
import { LineWriter, type CliIo } from "./cli-io.js";
import { cliVersion } from "./cli-version.js";
import { commandHelp, optionLines, parseCommandLine, parseOptions, type Command, type CommandContext, type OptionSpecs } from "./command.js";
import { detectCommand } from "./detect-command.js";
import { ExitCode, exitCodeOf, formatError, UsageError } from "./error-report.js";
import { cancelCommand, checkpointsCommand, jobsCommand, watchCommand } from "./job-commands.js";
import { exportCommand } from "./export-command.js";
import { importCommand } from "./import-command.js";
import { modelsCommand, promoteCommand, publishCommand, rollbackCommand } from "./model-commands.js";
import { policyCommand, promotionsCommand } from "./policy-command.js";
import { resultsCommand } from "./results-command.js";
import { streamCommand } from "./stream-command.js";
import { sweepCommand, sweepsCommand } from "./sweep-command.js";
import { trainCommand } from "./train-command.js";
import { trainersCommand } from "./trainers-command.js";
import { valCommand } from "./val-command.js";

/** Options every command takes. */
export const GLOBAL_OPTIONS: OptionSpecs = {
  trainer: { type: "string", value: "HOST:PORT", help: `trainer address (env POSELOOP_TRAINER_ADDR, default ${DEFAULT_TRAINER_ADDRESS})` },
  inferencer: { type: "string", value: "HOST:PORT", help: `inferencer address (env POSELOOP_INFERENCER_ADDR, default ${DEFAULT_INFERENCER_ADDRESS})` },
  token: { type: "string", value: "TOKEN", help: "bearer token sent with every call (env POSELOOP_TOKEN; POSELOOP_TOKEN_FILE: a file holding it)" },
  "tls-ca": { type: "string", value: "FILE", help: "connect over TLS, trusting the CA certificate in FILE (env POSELOOP_TLS_CA)" },
  "tls-cert": { type: "string", value: "FILE", help: "client certificate for mutual TLS, with --tls-key (env POSELOOP_TLS_CLIENT_CERT)" },
  "tls-key": { type: "string", value: "FILE", help: "private key of --tls-cert (env POSELOOP_TLS_CLIENT_KEY)" },
  timeout: { type: "string", value: "SECONDS", help: "deadline of each request (default 30, publish 1800; streams and watches have none)" },
  json: { type: "boolean", help: "print JSON: one document, or one line per event for streams" },
  help: { type: "boolean", short: "h", help: "show help" },
  version: { type: "boolean", short: "V", help: "print the version of poseloop" },
};

export const COMMANDS: readonly Command[] = [
  trainCommand,
  jobsCommand,
  watchCommand,
  cancelCommand,
  checkpointsCommand,
  resultsCommand,
  valCommand,
  sweepCommand,
  sweepsCommand,
  trainersCommand,
  publishCommand,
  importCommand,
  exportCommand,
  rollbackCommand,
  promoteCommand,
  policyCommand,
  promotionsCommand,
  modelsCommand,
  streamCommand,
  detectCommand,
];

/**
 * Runs the poseloop command line in this process and resolves with its exit code: 0 success, 1 failure
 * (one "poseloop: ..." line on stderr, then the problems indented), 2 usage error, 130 interrupted.
 * Everything it touches comes through `io`, so tests call it directly and read what it wrote.
 */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  const out = new LineWriter(io.stdout);
  const err = new LineWriter(io.stderr);
  const controller = new AbortController();
  const onAbort = (): void => controller.abort(io.signal?.reason);
  if (io.signal?.aborted === true) onAbort();
  else io.signal?.addEventListener("abort", onAbort, { once: true });
  let trainer: TrainerClient | undefined;
  let inference: InferenceClient | undefined;
  err.lines(unknownVariableWarnings(io.env));
  try {
    const { name, rest } = splitCommand(argv);
    if (name === "help") {
      const topic = rest.find((arg) => !arg.startsWith("-"));
      const command = topic === undefined ? undefined : findCommand(topic);
      if (topic !== undefined && command === undefined) throw unknownCommand(topic);
      out.lines(command === undefined ? topLevelHelp() : commandHelp(command, GLOBAL_OPTIONS));
      return ExitCode.OK;
    }
    if (name === undefined) {
      if (rest.length === 0) {
        err.lines(topLevelHelp());
        return ExitCode.USAGE;
      }
      const args = parseOptions(GLOBAL_OPTIONS, rest, undefined);
      if (args.flag("help")) {
        out.lines(topLevelHelp());
        return ExitCode.OK;
      }
      if (args.flag("version")) return printVersion(out);
      throw new UsageError("no command given");
    }
    const command = findCommand(name);
    if (command === undefined) throw unknownCommand(name);
    const args = parseCommandLine(command, GLOBAL_OPTIONS, rest);
    if (args.flag("help")) {
      out.lines(commandHelp(command, GLOBAL_OPTIONS));
      return ExitCode.OK;
    }
    if (args.flag("version")) return printVersion(out);
    const timeoutSeconds = args.number("timeout", { min: 0, minExclusive: true });
    const fromEnv = connectionsFromEnv(io.env);
    const token = args.string("token");
    const tokenSource: TokenSource = token !== undefined ? "--token" : fromEnv.trainer.token !== undefined ? "POSELOOP_TOKEN" : undefined;
    const tlsFlags = {
      ...optional("caFile", args.string("tls-ca")),
      ...optional("certFile", args.string("tls-cert")),
      ...optional("keyFile", args.string("tls-key")),
    };
    const connection = (base: ConnectionOptions, flag: "trainer" | "inferencer"): ConnectionOptions => {
      const address = args.string(flag);
      const tls = { ...base.tls, ...resolvePaths(tlsFlags, (path) => resolve(io.cwd ?? process.cwd(), path)) };
      return {
        ...base,
        ...(Object.keys(tls).length === 0 ? {} : { tls }),
        ...(address === undefined ? {} : { address }),
        ...(token === undefined ? {} : { token }),
        ...(timeoutSeconds === undefined ? {} : { defaultTimeoutMs: timeoutSeconds * 1000 }),
      };
    };
    const ctx: CommandContext = {
      args,
      out,
      err,
      json: args.flag("json"),
      signal: controller.signal,
      env: io.env,
      resolvePath: (path) => resolve(io.cwd ?? process.cwd(), path),
      trainer: () => (trainer ??= authExplained(asUsage(() => new TrainerClient(connection(fromEnv.trainer, "trainer")), "--trainer", command.name), "trainer", tokenSource)),
      inference: () =>
        (inference ??= authExplained(asUsage(() => new InferenceClient(connection(fromEnv.inferencer, "inferencer")), "--inferencer", command.name), "inferencer", tokenSource)),
    };
    return await command.run(ctx);
  } catch (error) {
    if (error instanceof UsageError) return usage(err, error);
    err.lines(formatError(error));
    return exitCodeOf(error, controller.signal.aborted);
  } finally {
    io.signal?.removeEventListener("abort", onAbort);
    trainer?.close();
    inference?.close();
  }
}

function optional<K extends string>(key: K, value: string | undefined): Partial<Record<K, string>> {
  return value === undefined ? {} : ({ [key]: value } as Record<K, string>);
}

function resolvePaths<T extends Record<string, string>>(paths: T, resolvePath: (path: string) => string): T {
  return Object.fromEntries(Object.entries(paths).map(([key, path]) => [key, resolvePath(path)])) as T;
}

function usage(err: LineWriter, error: UsageError): number {
  err.lines(formatError(error));
  return ExitCode.USAGE;
}

function findCommand(name: string): Command | undefined {
  return COMMANDS.find((command) => command.name === name);
}

async function printVersion(out: LineWriter): Promise<number> {
  out.line(`poseloop ${await cliVersion()}`);
  return ExitCode.OK;
}

function unknownCommand(name: string): UsageError {
  const suggestion = didYouMean(name, COMMANDS.map((command) => command.name));
  return new UsageError(`unknown command "${name}"${suggestion === undefined ? "" : ` (did you mean '${suggestion}'?)`}`);
}

/** A client whose UNAUTHENTICATED errors say which service refused, and what to do (see auth-failures.ts). */
function authExplained<T extends TrainerClient | InferenceClient>(client: T, service: string, token: TokenSource): T {
  return explainingAuthFailures(client, service, client.address, token);
}

/** The command name (the first argument that is neither a global option nor its value) and the rest. */
export function splitCommand(argv: readonly string[]): { name: string | undefined; rest: string[] } {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--") break;
    if (!arg.startsWith("-") || arg === "-") return { name: arg, rest: [...argv.slice(0, i), ...argv.slice(i + 1)] };
    const option = GLOBAL_OPTIONS[arg.replace(/^-+/, "").split("=")[0] ?? ""];
    if (option?.type === "string" && !arg.includes("=")) i++;
  }
  return { name: undefined, rest: [...argv] };
}

/** A client made from command-line values: its INVALID_ARGUMENT (a bad address or token) is a usage error. */
function asUsage<T>(make: () => T, flag: string, command: string): T {
  try {
    return make();
  } catch (error) {
    if (AppError.is(error, Code.INVALID_ARGUMENT)) throw new UsageError(`${flag}: ${error.problems.join("; ")}`, command);
    throw error;
  }
}

export function topLevelHelp(): string[] {
  const width = Math.max(...COMMANDS.map((command) => command.name.length));
  return [
    "Usage: poseloop <command> [options]",
    "",
    "Train human-pose keypoint models on the PoseLoop trainer and run video through the inferencer.",
    "",
    "Commands:",
    ...COMMANDS.map((command) => `  ${command.name.padEnd(width)}  ${command.summary}`),
    "",
    "Global options:",
    ...optionLines(GLOBAL_OPTIONS),
    "",
    "Run 'poseloop <command> --help' for the options of a command.",
    "Exit codes: 0 success, 1 failure, 2 usage error, 130 interrupted.",
  ];
}
