import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, posix } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { captureIo } from "../testing/capture-io.js";
import { COMMANDS, runCli } from "./run-cli.js";

/** The examples run from the repository's root. */
const ROOT = fileURLToPath(new URL("../../../../", import.meta.url));
/** detect's sample picture: not kept in the repository; its help says which npm script makes it. */
const MADE_BY_SCRIPT = new Set(["out/person.jpg"]);
const FILE_EXTENSIONS = /\.(ya?ml|json|onnx|mjs|ts|mp4|m4v|mov|mkv|gif|jpe?g|png|webp)$/;
/** Options whose value is written, not read. */
const OUTPUT_OPTIONS = new Set(["--out"]);
/** Options whose value is an id of something the user made: only a placeholder can stand for it. */
const ID_OPTIONS = new Set(["--resume", "--job", "--checkpoint", "--to"]);
const TOP_LEVEL = new Set(readdirSync(ROOT));

async function help(command: string): Promise<string> {
  const io = captureIo();
  expect(await runCli([command, "--help"], io)).toBe(0);
  return io.stdoutText();
}

/** A help text's words, without the brackets, quotes and punctuation around them. */
function wordsOf(text: string): string[] {
  return text.split(/\s+/).map((word) => word.replace(/^[([`'"]+|[)\]`'",;:.]+$/g, ""));
}

/** The words of a help text that name a file or folder of the repository, e.g. experiments/x.yaml or out/. */
function pathsIn(text: string): string[] {
  return wordsOf(text)
    .filter((word) => /^[\w.-]+(\/[\w.-]*)*$/.test(word) && !word.startsWith("."))
    .filter((word) => (word.includes("/") && (word.endsWith("/") || TOP_LEVEL.has(word.split("/")[0]!))) || FILE_EXTENSIONS.test(word));
}

/** An example's command line as its words, without quoted arguments, a pipe's other side or a comment. */
function exampleWords(example: string): string[] {
  return example
    .replace(/'[^']*'|"[^"]*"/g, "''")
    .replace(/\s#.*$/, "")
    .split("|")[0]!
    .trim()
    .split(/\s+/);
}

function examplesOf(text: string): string[] {
  const at = text.indexOf("\nExamples:\n");
  return at < 0 ? [] : text.slice(at + "\nExamples:\n".length).trimEnd().split("\n").map((line) => line.trim());
}

const normalize = (path: string): string => posix.normalize(path).replace(/\/$/, "");

describe("command help", () => {
  it.each(COMMANDS.map((command) => command.name))("%s: every example reads files that exist (or that an earlier example writes)", async (name) => {
    const text = await help(name);
    const written = new Set<string>(MADE_BY_SCRIPT);
    for (const path of MADE_BY_SCRIPT) written.add(dirname(path));
    const missing: string[] = [];
    for (const example of examplesOf(text)) {
      const words = exampleWords(example);
      expect(words.slice(0, 2), example).toEqual(["poseloop", name]);
      for (let i = 2; i < words.length; i++) {
        const word = words[i]!;
        if (OUTPUT_OPTIONS.has(word) && words[i + 1] !== undefined) {
          const output = normalize(words[++i]!);
          written.add(output);
          written.add(dirname(output));
          continue;
        }
        if (ID_OPTIONS.has(word)) expect(words[i + 1], `${example}: ${word} takes a placeholder`).toMatch(/^<[a-z-]+>$/);
        if (pathsIn(word).length === 0) continue;
        const path = normalize(word);
        if (!written.has(path) && !existsSync(join(ROOT, path))) missing.push(`${example}: ${word}`);
      }
    }
    expect(missing).toEqual([]);
  });

  it.each(COMMANDS.map((command) => command.name))("%s: every path its help names exists, but detect's sample picture", async (name) => {
    const words = wordsOf(await help(name));
    // What follows --out (in the usage line, an option's help or an example) is written, not read.
    const outputs = new Set(words.flatMap((word, i) => (OUTPUT_OPTIONS.has(words[i - 1] ?? "") ? pathsIn(word).map(normalize) : [])));
    const missing = words
      .filter((word, i) => !OUTPUT_OPTIONS.has(words[i - 1] ?? ""))
      .flatMap(pathsIn)
      .map(normalize)
      .filter((path) => !MADE_BY_SCRIPT.has(path) && ![...outputs].some((output) => output === path || dirname(output) === path))
      .filter((path) => !existsSync(join(ROOT, path)));
    expect(missing).toEqual([]);
  });

  it.each(COMMANDS.map((command) => command.name))("%s: every `npm run` its help names is a script of the repository", async (name) => {
    const { scripts } = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { scripts: Record<string, string> };
    const named = [...(await help(name)).matchAll(/npm run ([\w:-]+)/g)].map((match) => match[1]!);
    expect(named.filter((script) => scripts[script] === undefined)).toEqual([]);
  });

  it("names jobs, checkpoints and versions in examples by placeholders, not by ids that exist nowhere", async () => {
    for (const command of COMMANDS) {
      for (const example of examplesOf(await help(command.name))) {
        expect(example).not.toMatch(/\bjob-\d{8}|\b[0-9a-f]{6}\b|\be\d{4}-s\d{6}\b|\b\d{8}-\d{6}-[0-9a-f]{6}\b/);
      }
    }
  });
});
