import { readFile } from "node:fs/promises";
import { AppError, Code } from "@poseloop/core";
import type { PersonBox } from "@poseloop/client";

/** Problems listed in one error at most; a file that is wrong throughout needs no thousand lines of it. */
const MAX_LISTED = 20;

/**
 * Per-frame person boxes from JSON lines, one frame a line: `{"frame": N, "boxes": [[x, y, w, h, score?], ...]}`,
 * N the frame's number as `poseloop stream` counts them (from 1), boxes in frame pixels from the top-left
 * corner. A score, when given, is checked (0 to 1) and not sent: a client box is estimated whatever its score. Blank lines are skipped; a frame without a line has no boxes. Every problem is reported at once,
 * each with its line number: a line that is not JSON, a missing or repeated frame number, a box that is not
 * four or five finite numbers, an empty box, an unknown key.
 */
export function parseBoxesJsonl(text: string, shown: string): Map<number, PersonBox[]> {
  const frames = new Map<number, PersonBox[]>();
  const firstLine = new Map<number, number>();
  const problems: string[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = i + 1;
    if (raw.trim() === "") return;
    const problem = (what: string): void => void problems.push(`line ${line}: ${what}`);
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch (error) {
      problem(`not JSON (${(error as Error).message})`);
      return;
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      problem(`expected an object {"frame": N, "boxes": [...]}, got ${Array.isArray(value) ? "an array" : JSON.stringify(value)}`);
      return;
    }
    const record = value as Record<string, unknown>;
    for (const key of Object.keys(record)) if (key !== "frame" && key !== "boxes") problem(`unknown key "${key}" (a line has "frame" and "boxes")`);
    const frame = record["frame"];
    if (!(typeof frame === "number" && Number.isSafeInteger(frame) && frame >= 1)) {
      problem(`"frame" must be a frame number from 1, got ${frame === undefined ? "nothing" : JSON.stringify(frame)}`);
    } else if (firstLine.has(frame)) {
      problem(`frame ${frame} again (first on line ${firstLine.get(frame)})`);
    }
    const boxes = record["boxes"];
    if (!Array.isArray(boxes)) {
      problem(`"boxes" must be an array of [x, y, w, h] or [x, y, w, h, score], got ${boxes === undefined ? "nothing" : JSON.stringify(boxes)}`);
      return;
    }
    const parsed: PersonBox[] = [];
    boxes.forEach((box: unknown, j) => {
      const numbers = Array.isArray(box) && (box.length === 4 || box.length === 5) && box.every((v) => typeof v === "number" && Number.isFinite(v)) ? (box as number[]) : undefined;
      if (numbers === undefined) {
        problem(`box ${j} must be [x, y, w, h] or [x, y, w, h, score] of finite numbers, got ${JSON.stringify(box)}`);
        return;
      }
      const [x, y, width, height, score] = numbers as [number, number, number, number, number | undefined];
      if (!(width > 0 && height > 0)) problem(`box ${j} has width ${width} and height ${height}; both must be above 0`);
      else if (score !== undefined && !(score >= 0 && score <= 1)) problem(`box ${j} has score ${score}; a score is from 0 to 1`);
      else parsed.push({ x, y, width, height });
    });
    if (typeof frame === "number" && Number.isSafeInteger(frame) && frame >= 1 && !firstLine.has(frame)) {
      firstLine.set(frame, line);
      frames.set(frame, parsed);
    }
  });
  if (problems.length > MAX_LISTED) problems.splice(MAX_LISTED, problems.length - MAX_LISTED, `and ${problems.length - MAX_LISTED} more`);
  if (problems.length > 0) throw AppError.invalid(`boxes file ${shown}`, problems);
  return frames;
}

/** Reads and parses a boxes file (see parseBoxesJsonl). */
export async function readBoxesFile(path: string, shown: string): Promise<Map<number, PersonBox[]>> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw new AppError(Code.NOT_FOUND, `cannot read boxes file ${shown}: ${(error as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (error as Error).message}`, { cause: error });
  }
  return parseBoxesJsonl(text, shown);
}
