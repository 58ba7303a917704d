/**
 * Writes the sample picture of the README's CLI tour: one synthetic person, 192x256, rendered by the same
 * generator as the training data, as a JPEG. `npm run sample-image` writes out/person.jpg;
 * `npm run sample-image -- PATH [--seed N]` writes PATH from another seed. The same seed always gives the same
 * bytes.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { parseArgs } from "node:util";
import { PoseKind, renderSyntheticScene, SeededRandom, type SyntheticScene } from "@poseloop/data";
import { encodeJpeg } from "@poseloop/vision";

const WIDTH = 192;
const HEIGHT = 256;
const DEFAULT_SEED = 7;
const DEFAULT_PATH = "out/person.jpg";
/** Scenes of one seed tried before giving up; a whole person facing the camera comes within a few. */
const MAX_ATTEMPTS = 100;
/** Pixels between the person and the picture's border. */
const MARGIN = 4;
/** Postures that read as a person at a glance (not the generator's random joint angles). */
const POSES = [PoseKind.STANDING, PoseKind.WALKING, PoseKind.ARMS_UP, PoseKind.WAVING, PoseKind.LUNGE];

/**
 * The first scene of `seed` whose person is whole and faces the camera: every keypoint and a margin around the
 * body inside the picture. The renderer cuts some people at the border on purpose (the training data needs
 * them); a sample should not.
 */
function wholePersonScene(seed: number): { scene: SyntheticScene; attempt: number } {
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const scene = renderSyntheticScene(new SeededRandom(seed, attempt), {
      width: WIDTH,
      height: HEIGHT,
      minPeople: 1,
      maxPeople: 1,
      occlusion: 0,
      blur: 0,
      noise: 4,
      poseKinds: POSES,
    });
    const person = scene.people[0];
    if (person === undefined) continue;
    const visibility = person.keypoints.filter((_, i) => i % 3 === 2);
    const [x, y, w, h] = person.bbox;
    const clear = x >= MARGIN && y >= MARGIN && x + w <= WIDTH - MARGIN && y + h <= HEIGHT - MARGIN;
    const facing = Math.abs(person.yaw) <= 40;
    if (clear && facing && visibility.length === 17 && visibility.every((v) => v > 0)) return { scene, attempt };
  }
  throw new Error(`no whole person in ${MAX_ATTEMPTS} scenes of seed ${seed}`);
}

function usage(problem: string): never {
  process.stderr.write(`sample-image: ${problem}\nusage: npm run sample-image [-- [PATH] [--seed N]]  (default ${DEFAULT_PATH}, seed ${DEFAULT_SEED})\n`);
  process.exit(2);
}

let parsed;
try {
  parsed = parseArgs({ allowPositionals: true, options: { seed: { type: "string" } } });
} catch (error) {
  usage((error as Error).message);
}
if (parsed.positionals.length > 1) usage(`one output path at most, got ${parsed.positionals.length}`);
const seedText = parsed.values.seed ?? String(DEFAULT_SEED);
const seed = Number(seedText);
if (!/^\d+$/.test(seedText) || !Number.isSafeInteger(seed)) usage(`--seed must be a non-negative integer, got "${seedText}"`);
const shown = parsed.positionals[0] ?? DEFAULT_PATH;
// npm runs scripts in the package's folder; INIT_CWD is where `npm run` was typed.
const path = resolve(process.env["INIT_CWD"] ?? process.cwd(), shown);

const { scene, attempt } = wholePersonScene(seed);
await mkdir(dirname(path), { recursive: true });
await writeFile(path, await encodeJpeg(scene.image, 90));
const person = scene.people[0];
const [x, y, w, h] = person?.bbox ?? [0, 0, 0, 0];
process.stdout.write(`wrote ${shown}: ${WIDTH}x${HEIGHT}, one ${person?.poseKind ?? ""} person in box ${x},${y} ${w}x${h} (seed ${seed}, scene ${attempt})\n`);
