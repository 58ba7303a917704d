import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdir, symlink } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { runCli, type CliIo } from "@poseloop/cli";
import { makeTempDir, spawnService, waitFor, type ServiceProcess } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

// The README's CLI tour, run as written against a real trainer and inferencer, so that a stale command or a
// stale message fails CI instead of misleading a reader. Every `$ poseloop …` and `$ npm run …` line of the
// README's code blocks runs, in the README's order, from a directory that looks like a checkout (experiments/
// and test/fixtures/ linked in), with the services on an embedded bus of its own, as `npm start -- --serve`
// runs them; a command the test cannot run fails it. Each command must exit as the README says ("(exit N)" after
// its output, else 0), and the first line it prints (stdout and stderr as a terminal interleaves them) must have
// the shape of the README's: the same words, with every token holding a digit (numbers, ids, versions, times,
// addresses) a wildcard. A failing command's recorded lines are all checked so, as they are short and say what
// went wrong. Ids the README's commands name (jobs, checkpoints) are those of the recorded run: each is replaced
// by the id of this run found at the same place of an earlier command's output. A command shown after "(the other
// terminal …)" runs while the stream before it does, and a version it makes serve before the stream's last frame
// must show as a switch in the stream. After a train, publish or rollback the test waits for the inferencer to
// serve the new version, as the time a person takes to type the next command would. SUBSTITUTIONS lists what
// runs otherwise than shown, and why.

const REPO = fileURLToPath(new URL("..", import.meta.url));
const TRAINER = join(REPO, "services/trainer/src/main.ts");
const INFERENCER = join(REPO, "services/inferencer/src/main.ts");
const DEMO_RECIPE = "experiments/synthetic/lite_128x96_demo.yaml";
const STREAM_FRAMES = 120;

/** The demo recipe made small: two epochs in seconds. None touches the schedule: the tour's first command fails as shown. */
const SMALL_DEMO = [
  "WORKERS=1",
  "DATASET.DISK_CACHE=false",
  "DATASET.SYNTHETIC.TRAIN_IMAGES=40",
  "DATASET.SYNTHETIC.VAL_IMAGES=8",
  "DATASET.SYNTHETIC.IMAGE_SIZE=[128, 96]",
  "MODEL.IMAGE_SIZE=[48, 64]",
  "MODEL.HEATMAP_SIZE=[24, 32]",
  "MODEL.EXTRA.CHANNELS=[8, 16, 32]",
  "MODEL.EXTRA.BLOCKS_PER_STAGE=1",
  "TRAIN.REPLICAS=1",
  "TEST.FLIP_TEST=false",
  "QUANT.CALIBRATION_SAMPLES=16",
  // A model this small has noisy AP; the gate runs, but must not keep the tour from publishing.
  "QUANT.MAX_AP_DROP=100",
];

interface Substitution {
  readonly why: string;
  applies(words: readonly string[]): boolean;
  apply(words: readonly string[]): string[];
}

/** How the test runs the README commands that would take minutes, or write outside its directory, as shown. */
const SUBSTITUTIONS: readonly Substitution[] = [
  {
    why: `the demo recipe trains for minutes; with ${SMALL_DEMO.length} --set overrides (40 pictures, 64x48, the three-width net) two epochs take seconds`,
    applies: (words) => words[0] === "poseloop" && words[1] === "train" && words.includes(DEMO_RECIPE),
    apply: (words) => [...words, ...SMALL_DEMO.flatMap((pair) => ["--set", pair])],
  },
  {
    why: `${STREAM_FRAMES} real-time frames instead of the README's 300 (30 s): the other terminal's publication usually lands mid-stream all the same`,
    applies: (words) => words[0] === "poseloop" && words[1] === "stream" && words.includes("--frames"),
    apply: (words) => words.map((word, i) => (words[i - 1] === "--frames" ? String(STREAM_FRAMES) : word)),
  },
  {
    why: "npm runs a script where it was typed (INIT_CWD); --prefix finds this checkout from the test's directory, --silent leaves out npm's banner (as the README does)",
    applies: (words) => words[0] === "npm" && words[1] === "run",
    apply: (words) => ["npm", "--prefix", REPO, "--silent", ...words.slice(1)],
  },
];

/** One command of the README, with what the README says it printed. */
interface TourCommand {
  /** README line number, for messages. */
  readonly line: number;
  readonly text: string;
  readonly words: readonly string[];
  readonly exitCode: number;
  /** Output lines as recorded; "…" marks lines left out. */
  readonly recorded: readonly string[];
  /** Shown after "(the other terminal)": it runs while the command before it still does. */
  readonly duringPrevious: boolean;
}

const ELISION = "…";
const OTHER_TERMINAL = /^\(the other terminal\b[^)]*\)$/;

/**
 * The commands of README code blocks: a `$ ` line, then its output up to a blank line, the next command or the
 * block's end. Between commands a block may hold only blank lines and "(the other terminal…)".
 */
function tourCommands(markdown: string): TourCommand[] {
  const commands: TourCommand[] = [];
  const lines = markdown.split("\n");
  let inBlock = false;
  let blockHasCommands = false;
  let current: { line: number; text: string; output: string[]; duringPrevious: boolean } | undefined;
  let otherTerminal = false;
  const strays: string[] = [];
  const finish = (): void => {
    if (current === undefined) return;
    const { line, text, output, duringPrevious } = current;
    const exit = /^\(exit (\d+)\)$/.exec(output.at(-1) ?? "");
    commands.push({ line, text, words: shellWords(text), exitCode: exit === null ? 0 : Number(exit[1]), recorded: exit === null ? output : output.slice(0, -1), duringPrevious });
    current = undefined;
  };
  lines.forEach((raw, index) => {
    const text = raw.trimEnd();
    if (text.startsWith("```")) {
      finish();
      inBlock = !inBlock;
      blockHasCommands = false;
      return;
    }
    if (!inBlock) return;
    if (text.startsWith("$ ")) {
      finish();
      blockHasCommands = true;
      current = { line: index + 1, text: text.slice(2), output: [], duringPrevious: otherTerminal };
      otherTerminal = false;
    } else if (text === "") {
      finish();
    } else if (current !== undefined) {
      current.output.push(text);
    } else if (blockHasCommands && OTHER_TERMINAL.test(text)) {
      otherTerminal = true;
    } else if (blockHasCommands) {
      strays.push(`README line ${index + 1}: "${text}" is neither a command, its output nor "(the other terminal)"`);
    }
  });
  if (strays.length > 0) throw new Error(strays.join("\n"));
  return commands;
}

/** A command line split as a POSIX shell would: quotes group, a `#` starting a word begins a comment. */
function shellWords(line: string): string[] {
  const words: string[] = [];
  let word: string | undefined;
  let quote: string | undefined;
  for (const char of line) {
    if (quote !== undefined) {
      if (char === quote) quote = undefined;
      else word = (word ?? "") + char;
    } else if (char === '"' || char === "'") {
      quote = char;
      word ??= "";
    } else if (/\s/.test(char)) {
      if (word !== undefined) words.push(word);
      word = undefined;
    } else if (char === "#" && word === undefined) {
      break;
    } else {
      word = (word ?? "") + char;
    }
  }
  if (quote !== undefined) throw new Error(`unbalanced ${quote} in: ${line}`);
  if (word !== undefined) words.push(word);
  return words;
}

/** A token holding a digit: a number, an id, a version, a time or an address, different on every run. */
const VARIABLE = /[\w.:+-]*\d[\w.:+-]*/g;
/** Of those, the ids a later command may name: letters, digits and a hyphen (job-…, e0001-s…, versions). */
const ID = /^(?=[\w.:+-]*[A-Za-z])(?=[\w.:+-]*\d)(?=[\w.:+-]*-)[\w.:+-]{8,}$/;

/** The recorded line as a pattern: its words as they are, each variable token a capture, spaces any run. */
function shapeOf(recorded: string): { pattern: RegExp; tokens: string[] } {
  const text = recorded.trim();
  const literal = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&").replace(/ +/g, " +");
  let source = "^";
  let last = 0;
  const tokens: string[] = [];
  for (const match of text.matchAll(VARIABLE)) {
    source += `${literal(text.slice(last, match.index))}(${VARIABLE.source})`;
    tokens.push(match[0]);
    last = match.index + match[0].length;
  }
  return { pattern: new RegExp(`${source}${literal(text.slice(last))}$`), tokens };
}

function matchesShape(recorded: string, real: string | undefined): boolean {
  return real !== undefined && shapeOf(recorded).pattern.test(real.trim());
}

/** Recorded ids → this run's, learnt from outputs whose lines have the recorded shape. */
class IdMap {
  readonly #ids = new Map<string, string>();

  /** Lines before the first "…" pair with the real ones from the top, lines after the last from the bottom. */
  learn(recorded: readonly string[], real: readonly string[]): void {
    const first = recorded.indexOf(ELISION);
    const head = first < 0 ? recorded : recorded.slice(0, first);
    head.forEach((line, i) => this.#pair(line, real[i]));
    if (first < 0) return;
    const tail = recorded.slice(recorded.lastIndexOf(ELISION) + 1);
    tail.forEach((line, i) => this.#pair(line, real[real.length - tail.length + i]));
  }

  /**
   * Pairs the words of two lines from the front while they have the same shape, then from the back: a table row
   * whose sizes went from MiB to KiB, or which gained a column's mark, still pairs its ids.
   */
  #pair(recorded: string, real: string | undefined): void {
    if (real === undefined) return;
    const recordedWords = recorded.trim().split(/\s+/);
    const realWords = real.trim().split(/\s+/);
    for (let i = 0; i < Math.min(recordedWords.length, realWords.length) && this.#learn(recordedWords[i]!, realWords[i]!); i++);
    for (let i = 1; i <= Math.min(recordedWords.length, realWords.length) && this.#learn(recordedWords.at(-i)!, realWords.at(-i)!); i++);
  }

  /** Learns the ids of one recorded word from the real one; false when their shapes differ. */
  #learn(recorded: string, real: string): boolean {
    const { pattern, tokens } = shapeOf(recorded);
    const match = pattern.exec(real);
    if (match === null) return false;
    tokens.forEach((token, i) => {
      if (ID.test(token) && !this.#ids.has(token)) this.#ids.set(token, match[i + 1] ?? token);
    });
    return true;
  }

  /** The command with this run's ids; an id no earlier output showed is an error. */
  substitute(words: readonly string[]): string[] {
    return words.map((word) =>
      word.replace(VARIABLE, (token) => {
        if (!ID.test(token)) return token;
        const real = this.#ids.get(token);
        if (real === undefined) throw new Error(`${token} is not at the same place of any earlier command's output in this run`);
        return real;
      }),
    );
  }
}

/** What a command printed, interleaved as a terminal shows stdout and stderr, with its exit code. */
interface Run {
  readonly code: number;
  readonly output: string;
}

const lines = (text: string): string[] => text.split("\n").filter((line) => line.trim() !== "");

let dir: { path: string; remove: () => Promise<void> };
let trainer: ServiceProcess | undefined;
let inferencer: ServiceProcess | undefined;
let env: Record<string, string>;

/** Runs `poseloop` in this process; `onOutput` sees the transcript as it grows. */
async function poseloop(argv: readonly string[], timeoutMs: number, onOutput?: (text: string) => void): Promise<Run> {
  let output = "";
  const write = (chunk: string): void => {
    output += chunk;
    onOutput?.(output);
  };
  const io: CliIo = { stdout: { write, isTTY: false, columns: 120 }, stderr: { write }, env, cwd: dir.path, signal: AbortSignal.timeout(timeoutMs) };
  const code = await runCli(argv, io);
  return { code, output };
}

async function npm(argv: readonly string[], timeoutMs: number): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.platform === "win32" ? "npm.cmd" : "npm", argv, { cwd: dir.path, stdio: ["ignore", "pipe", "pipe"], timeout: timeoutMs });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.once("error", reject);
    child.once("close", (code, signal) => resolve({ code: code ?? (signal === null ? 1 : 128), output }));
  });
}

/** The version a train, publish or rollback made serve, as its output names it. */
function servingAfter(output: string): string | undefined {
  return (/^published (\S+@\S+) .*: serving now$/m.exec(output) ?? /\bserving (\S+@\S+) \(/.exec(output))?.[1];
}

/** Waits until the inferencer serves `version`: a person typing the next command gives it that time. */
async function untilServing(version: string): Promise<void> {
  const [name] = version.split("@");
  await waitFor(
    async () => {
      const { code, output } = await poseloop(["models", name ?? "", "--json"], 10_000);
      if (code !== 0) return false;
      const { serving } = JSON.parse(output) as { serving: { manifest?: { model?: { name?: string; version?: string } } } };
      return `${serving.manifest?.model?.name}@${serving.manifest?.model?.version}` === version;
    },
    { timeoutMs: 30_000, intervalMs: 200, what: `${version} serving on the inferencer` },
  );
}

/** A `poseloop stream` left running while the other terminal's commands go. */
interface BackgroundStream {
  readonly command: TourCommand;
  readonly run: Promise<Run>;
  /** Settles once it has printed a frame's result, or ended. */
  readonly firstResult: Promise<void>;
  /** performance.now() before which its last frame cannot have been sent: --realtime paces them from its start. */
  readonly lastFrameSentAfter: number;
  /** When a version published beside it was seen serving. */
  swappedAt?: number;
}

function startStream(command: TourCommand, argv: readonly string[], timeoutMs: number): BackgroundStream {
  const option = (name: string, fallback: number) => {
    const at = argv.indexOf(name);
    return at < 0 ? fallback : Number(argv[at + 1]);
  };
  const realtime = argv.includes("--realtime");
  const lastFrameSentAfter = performance.now() + (realtime ? ((option("--frames", 60) - 1) * 1000) / option("--fps", 10) : 0);
  let answered: () => void = () => {};
  const firstResult = new Promise<void>((resolve) => (answered = resolve));
  const run = poseloop(argv, timeoutMs, (text) => /^frame \d+ /m.test(text) && answered());
  void run.finally(() => answered());
  return { command, run, firstResult, lastFrameSentAfter };
}

beforeAll(async () => {
  dir = await makeTempDir("poseloop-readme-");
  // The tour runs from the repository root: the paths it names must resolve as they would there.
  await mkdir(join(dir.path, "test"));
  await symlink(join(REPO, "experiments"), join(dir.path, "experiments"));
  await symlink(join(REPO, "test/fixtures"), join(dir.path, "test/fixtures"));
  const common = { POSELOOP_NATS_URL: "", POSELOOP_BUS_DIR: join(dir.path, ".poseloop/bus"), POSELOOP_LOG_LEVEL: "info", POSELOOP_DRAIN_TIMEOUT: "2s" };
  [trainer, inferencer] = await Promise.all([
    spawnService(TRAINER, { ...common, POSELOOP_TRAINER_LISTEN: "127.0.0.1:0", POSELOOP_DATA_ROOT: join(dir.path, "data"), POSELOOP_WORK_DIR: join(dir.path, ".poseloop/work") }, 90_000),
    spawnService(INFERENCER, { ...common, POSELOOP_INFERENCER_LISTEN: "127.0.0.1:0" }, 90_000),
  ]);
  env = { POSELOOP_TRAINER_ADDR: `127.0.0.1:${trainer.port}`, POSELOOP_INFERENCER_ADDR: `127.0.0.1:${inferencer.port}` };
}, 120_000);

afterAll(async () => {
  await Promise.all([trainer?.stop(), inferencer?.stop()]);
  await dir?.remove();
});

describe("README.md", () => {
  const commands = tourCommands(readFileSync(join(REPO, "README.md"), "utf8"));

  it("shows a tour of the CLI, every command of it one the test knows how to run", () => {
    expect(commands.length).toBeGreaterThan(5);
    for (const command of commands) {
      expect(["poseloop", "npm"], `README line ${command.line}: ${command.text}`).toContain(command.words[0]);
      if (command.words[0] === "npm") expect(command.words.slice(0, 2), `README line ${command.line}`).toEqual(["npm", "run"]);
    }
    for (const substitution of SUBSTITUTIONS) {
      expect(commands.some((command) => substitution.applies(command.words)), `a substitution no command needs any more: ${substitution.why}`).toBe(true);
    }
  });

  it("runs each command of the tour against real services as the README shows it", async () => {
    const ids = new IdMap();
    const failures: string[] = [];
    /** The stream that the other terminal's commands run beside. */
    let stream: BackgroundStream | undefined;

    const check = (command: TourCommand, run: Run, extra: readonly string[] = []): void => {
      const real = lines(run.output);
      ids.learn(command.recorded, real);
      const problems = [...extra];
      if (run.code !== command.exitCode) problems.push(`exited ${run.code}, the README shows ${command.exitCode}`);
      // A failure's lines say what went wrong: all of them must still be true. Otherwise the first line.
      const checked = command.exitCode !== 0 ? command.recorded : command.recorded.slice(0, 1);
      if (command.exitCode !== 0 && real.length !== checked.length) problems.push(`printed ${real.length} lines, the README shows ${checked.length}`);
      checked.forEach((recorded, i) => {
        if (recorded !== ELISION && !matchesShape(recorded, real[i])) problems.push(`line ${i + 1} is\n    ${real[i] ?? "(nothing)"}\n  the README shows\n    ${recorded}`);
      });
      if (problems.length > 0) failures.push(`README line ${command.line}: $ ${command.text}\n  ${problems.join("\n  ")}\n  its output:\n${run.output.replace(/^/gm, "    | ")}`);
    };

    const finishStream = async (): Promise<void> => {
      if (stream === undefined) return;
      const { command, run, lastFrameSentAfter, swappedAt } = stream;
      stream = undefined;
      const result = await run;
      // A version that served before the last frame left must have answered it: the README's hot swap. (Frames
      // are never sent ahead of their time, so the last one left no sooner than lastFrameSentAfter.)
      const swapped = swappedAt !== undefined && swappedAt < lastFrameSentAfter && !/^frame \d+: serving version switched /m.test(result.output);
      check(command, result, swapped ? ["a new version served before its last frame was sent, but it shows no switch"] : []);
    };

    for (const command of commands) {
      let words = command.words;
      for (const substitution of SUBSTITUTIONS) if (substitution.applies(words)) words = substitution.apply(words);
      try {
        words = ids.substitute(words);
      } catch (error) {
        throw new Error(`README line ${command.line}: $ ${command.text}\n  ${(error as Error).message}${failures.map((failure) => `\n\nbefore it:\n${failure}`).join("")}`);
      }
      const timeoutMs = words[1] === "train" ? 150_000 : 60_000;

      if (command.duringPrevious) {
        // "(the other terminal)": the stream before it is running; this command goes in once frames come back.
        expect(stream, `README line ${command.line}: only a stream can run beside the other terminal`).toBeDefined();
        await stream?.firstResult;
      } else {
        await finishStream();
      }

      if (words[0] === "npm" && words.includes("run")) {
        check(command, await npm(words.slice(1), timeoutMs));
      } else if (words[0] !== "poseloop") {
        throw new Error(`README line ${command.line}: the test cannot run "${command.text}" (only poseloop and npm run)`);
      } else if (words[1] === "stream") {
        stream = startStream(command, words.slice(1), timeoutMs);
      } else {
        const run = await poseloop(words.slice(1), timeoutMs);
        check(command, run);
        if (run.code === 0 && ["train", "publish", "rollback"].includes(words[1] ?? "")) {
          const version = servingAfter(run.output);
          expect(version, `README line ${command.line}: which version serves now, from:\n${run.output}`).toBeDefined();
          await untilServing(version ?? "");
          if (stream !== undefined) stream.swappedAt ??= performance.now();
        }
      }
    }
    await finishStream();
    expect(failures, failures.join("\n\n")).toEqual([]);
    // About 30 s alone on 2 cores; the bound leaves room for the rest of the suite running beside it.
  }, 240_000);
});
