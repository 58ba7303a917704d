#!/usr/bin/env node
// Draws the AP-per-epoch curves of docs/demo-recipe-history.md into docs/demo-recipe-history.svg.
// The data is the table between the plot-data markers of that page, so the figure and the numbers it shows
// cannot drift apart: edit the table, then run `node docs/plot-demo-history.mjs`. No dependencies; the SVG is
// written by hand and is byte-identical for the same table.
import { readFileSync, writeFileSync } from "node:fs";

const here = new URL(".", import.meta.url);
const source = new URL("demo-recipe-history.md", here);
const target = new URL("demo-recipe-history.svg", here);

/** Rows of the marked table: { key, label, values } with null for epochs not recorded ("–"). */
function readCurves(markdown) {
  const start = markdown.indexOf("<!-- plot-data:start -->");
  const end = markdown.indexOf("<!-- plot-data:end -->");
  if (start < 0 || end < start) throw new Error("docs/demo-recipe-history.md has no plot-data markers");
  const rows = markdown
    .slice(start, end)
    .split("\n")
    .filter((line) => line.startsWith("|"))
    .map((line) => line.split("|").slice(1, -1).map((cell) => cell.trim()));
  // The header and the |---| line come first.
  return rows.slice(2).map(([key, label, values], i) => {
    const points = values.split(/\s+/).map((token) => (token === "–" || token === "-" ? null : Number(token)));
    for (const value of points) {
      if (value !== null && !(value >= 0 && value <= 1)) throw new Error(`row ${i + 1} (${key}): ${JSON.stringify(values)} is not a list of APs`);
    }
    return { key, label, points };
  });
}

const escape = (text) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
const fixed = (value) => value.toFixed(1);

// Okabe-Ito colours (distinguishable with the common colour-vision deficiencies), with dashes as a second cue;
// the last curve (the recipe as it is) is solid black and thicker.
const STYLES = [
  { colour: "#E69F00", dash: "6 3" },
  { colour: "#56B4E9", dash: "2 3" },
  { colour: "#009E73", dash: "8 3 2 3" },
  { colour: "#0072B2", dash: "4 2" },
  { colour: "#D55E00", dash: "" },
  { colour: "#CC79A7", dash: "" },
];
const LAST = { colour: "#000000", dash: "" };

function render(curves) {
  const width = 880;
  const height = 540;
  const plot = { left: 64, right: width - 24, top: 48, bottom: height - 56 };
  const epochs = Math.max(...curves.map((curve) => curve.points.length));
  const apMax = Math.max(0.1, Math.ceil(Math.max(...curves.flatMap((curve) => curve.points.filter((v) => v !== null))) * 10) / 10);
  const x = (epoch) => plot.left + ((epoch - 1) / Math.max(1, epochs - 1)) * (plot.right - plot.left);
  const y = (ap) => plot.bottom - (ap / apMax) * (plot.bottom - plot.top);
  const out = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">`);
  out.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  out.push(`<text x="${width / 2}" y="24" text-anchor="middle" font-size="15" font-weight="bold">Demo recipe: validation AP after each epoch (lite net, 128x96, 200 rendered pictures)</text>`);

  // Gridlines and tick labels.
  for (let tenth = 0; tenth <= Math.round(apMax * 10); tenth++) {
    const ap = tenth / 10;
    out.push(`<line x1="${plot.left}" y1="${fixed(y(ap))}" x2="${plot.right}" y2="${fixed(y(ap))}" stroke="#dddddd"/>`);
    out.push(`<text x="${plot.left - 8}" y="${fixed(y(ap) + 4)}" text-anchor="end">${ap.toFixed(1)}</text>`);
  }
  for (let epoch = 1; epoch <= epochs; epoch++) {
    out.push(`<line x1="${fixed(x(epoch))}" y1="${plot.top}" x2="${fixed(x(epoch))}" y2="${plot.bottom}" stroke="#eeeeee"/>`);
    out.push(`<text x="${fixed(x(epoch))}" y="${plot.bottom + 18}" text-anchor="middle">${epoch}</text>`);
  }
  // Axes and their titles.
  out.push(`<line x1="${plot.left}" y1="${plot.bottom}" x2="${plot.right}" y2="${plot.bottom}" stroke="#000000"/>`);
  out.push(`<line x1="${plot.left}" y1="${plot.top}" x2="${plot.left}" y2="${plot.bottom}" stroke="#000000"/>`);
  out.push(`<text x="${(plot.left + plot.right) / 2}" y="${height - 16}" text-anchor="middle" font-size="13">epoch</text>`);
  out.push(`<text x="18" y="${(plot.top + plot.bottom) / 2}" text-anchor="middle" font-size="13" transform="rotate(-90 18 ${(plot.top + plot.bottom) / 2})">COCO keypoint AP</text>`);

  // Curves: a line through consecutive recorded epochs, a dot on every recorded one.
  curves.forEach((curve, i) => {
    const style = i === curves.length - 1 ? LAST : STYLES[i % STYLES.length];
    const strokeWidth = i === curves.length - 1 ? 2.5 : 1.6;
    const dash = style.dash === "" ? "" : ` stroke-dasharray="${style.dash}"`;
    let run = [];
    const flush = () => {
      if (run.length > 1) out.push(`<polyline fill="none" stroke="${style.colour}" stroke-width="${strokeWidth}"${dash} points="${run.join(" ")}"/>`);
      run = [];
    };
    curve.points.forEach((ap, e) => {
      if (ap === null) return flush();
      run.push(`${fixed(x(e + 1))},${fixed(y(ap))}`);
    });
    flush();
    curve.points.forEach((ap, e) => {
      if (ap !== null) out.push(`<circle cx="${fixed(x(e + 1))}" cy="${fixed(y(ap))}" r="2.6" fill="${style.colour}"/>`);
    });
  });

  // Legend in the lower right, where every curve is already above it.
  const rowHeight = 18;
  // No font metrics without a renderer: 7 px a character is a safe width for 12 px Helvetica or Arial.
  const legendWidth = 58 + 7 * Math.max(...curves.map((curve) => `${curve.key}: ${curve.label}`.length));
  const legendHeight = curves.length * rowHeight + 12;
  const lx = plot.right - legendWidth - 10;
  const ly = plot.bottom - legendHeight - 10;
  out.push(`<rect x="${lx}" y="${ly}" width="${legendWidth}" height="${legendHeight}" fill="#ffffff" stroke="#999999"/>`);
  curves.forEach((curve, i) => {
    const style = i === curves.length - 1 ? LAST : STYLES[i % STYLES.length];
    const strokeWidth = i === curves.length - 1 ? 2.5 : 1.6;
    const dash = style.dash === "" ? "" : ` stroke-dasharray="${style.dash}"`;
    const rowY = ly + 14 + i * rowHeight;
    out.push(`<line x1="${lx + 10}" y1="${rowY}" x2="${lx + 40}" y2="${rowY}" stroke="${style.colour}" stroke-width="${strokeWidth}"${dash}/>`);
    out.push(`<circle cx="${lx + 25}" cy="${rowY}" r="2.6" fill="${style.colour}"/>`);
    out.push(`<text x="${lx + 48}" y="${rowY + 4}">${escape(`${curve.key}: ${curve.label}`)}</text>`);
  });
  out.push("</svg>");
  return `${out.join("\n")}\n`;
}

const curves = readCurves(readFileSync(source, "utf8"));
writeFileSync(target, render(curves));
process.stdout.write(`wrote ${target.pathname}: ${curves.length} curves\n`);
