import { basename } from "node:path";
import { formatTable } from "./job-format.js";

/** results.csv as rows of cells: its header, then one row per epoch (an empty CSV gives an empty header). */
export function parseResultsCsv(csv: string): { header: string[]; rows: string[][] } {
  const [head, ...lines] = csv.split(/\r?\n/).filter((line) => line.trim() !== "");
  return { header: head === undefined ? [] : head.split(","), rows: lines.map((line) => line.split(",")) };
}

/** results.csv as an aligned table for a terminal; a cell the epoch has not (an unvalidated epoch's AP) shows "-". */
export function resultsTable(csv: string): string[] {
  const { header, rows } = parseResultsCsv(csv);
  if (header.length === 0) return [];
  return formatTable(header, rows.map((row) => header.map((_, i) => row[i] || "-")));
}

/** results.csv as JSON objects keyed by column: numbers as numbers, an empty cell as null, "nan" as null. */
export function resultsRecords(csv: string): Record<string, number | null>[] {
  const { header, rows } = parseResultsCsv(csv);
  const number = (cell: string | undefined): number | null => {
    const value = cell === undefined || cell === "" ? Number.NaN : Number(cell);
    return Number.isFinite(value) ? value : null;
  };
  return rows.map((row) => Object.fromEntries(header.map((column, i) => [column, number(row[i])])));
}

/**
 * The file a plot is saved as: the server's name when it is a plain PNG file name, never a path (a trainer
 * answering "../x.png" cannot write outside --plot DIR).
 */
export function plotFileName(name: string, index: number): string {
  const base = basename(name);
  return base === name && /^[A-Za-z0-9][A-Za-z0-9._-]*\.png$/.test(base) ? base : `plot-${index + 1}.png`;
}
