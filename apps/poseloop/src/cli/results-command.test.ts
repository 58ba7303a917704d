import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { makeTempDir } from "@poseloop/testkit";
import { afterEach, describe, expect, it } from "vitest";
import { fakeJob, startFakeTrainer, type FakeTrainerScript } from "@poseloop/client/testing";
import { captureIo } from "../testing/capture-io.js";
import { parseResultsCsv, plotFileName, resultsRecords, resultsTable } from "./results-format.js";
import { runCli } from "./run-cli.js";

const CSV = [
  "epoch,step,train_loss,lr,ap,ap50,ap75,ap_medium,ap_large,ar,ar50,ar75,train_s,val_s,samples_per_s",
  "1,10,0.00231,0.001,,,,,,,,,4.20,,38.1",
  "2,20,0.0017,0.0001,0.5123,0.8000,0.5000,-1.0000,0.5123,0.6000,0.8500,0.5500,4.00,1.25,40.0",
  "",
].join("\n");
const PNG = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function withTrainer(script: FakeTrainerScript): Promise<string[]> {
  const server = await startFakeTrainer(script);
  cleanups.push(() => server.stop());
  return ["--trainer", server.address];
}

describe("results formatting", () => {
  it("aligns the columns and shows an epoch's missing AP as '-'", () => {
    const lines = resultsTable(CSV);
    expect(lines).toHaveLength(3);
    expect(lines[0]?.startsWith("epoch  step  train_loss  lr ")).toBe(true);
    // Every row's AP starts where the header's does.
    const at = lines[0]?.indexOf(" ap ") ?? -1;
    expect(lines[1]?.slice(at + 1, at + 2)).toBe("-");
    expect(lines[2]?.slice(at + 1, at + 7)).toBe("0.5123");
  });

  it("reads the CSV into records with numbers and nulls", () => {
    const [first, second] = resultsRecords(CSV);
    expect(first).toMatchObject({ epoch: 1, train_loss: 0.00231, ap: null });
    expect(second).toMatchObject({ epoch: 2, ap: 0.5123, ap_medium: -1, val_s: 1.25 });
    expect(parseResultsCsv("").header).toEqual([]);
  });

  it("never lets a plot name leave the --plot folder", () => {
    expect(plotFileName("loss.png", 0)).toBe("loss.png");
    expect(plotFileName("../loss.png", 1)).toBe("plot-2.png");
    expect(plotFileName("/etc/x.png", 0)).toBe("plot-1.png");
  });
});

describe("poseloop results", () => {
  const script: FakeTrainerScript = {
    jobs: [fakeJob({ jobId: "job-1" })],
    results: { "job-1": { csv: CSV, checkpointId: "e0002-s0000020", plots: [{ name: "loss.png", png: PNG }, { name: "ap.png", png: PNG }] } },
  };

  it("prints the table and saves the plots with --plot", async () => {
    const temp = await makeTempDir("poseloop-results-");
    cleanups.push(temp.remove);
    const io = captureIo();
    expect(await runCli(["results", "job-1", "--plot", join(temp.path, "plots"), ...(await withTrainer(script))], io)).toBe(0);
    expect(io.stdoutText().split("\n")[0]).toMatch(/^epoch {2}step {2}train_loss/);
    expect(io.stderrText()).toContain("as of checkpoint e0002-s0000020");
    expect((await readdir(join(temp.path, "plots"))).sort()).toEqual(["ap.png", "loss.png"]);
    expect(new Uint8Array(await readFile(join(temp.path, "plots", "loss.png")))).toEqual(PNG);
  });

  it("prints one JSON document with --json and the stored CSV with --csv", async () => {
    const address = await withTrainer(script);
    const json = captureIo();
    expect(await runCli(["results", "job-1", "--json", ...address], json)).toBe(0);
    const doc = JSON.parse(json.stdoutText()) as { epochs: { epoch: number }[]; plots: string[] };
    expect(doc.epochs.map((e) => e.epoch)).toEqual([1, 2]);
    expect(doc.plots).toEqual(["loss.png", "ap.png"]);
    const csv = captureIo();
    expect(await runCli(["results", "job-1", "--csv", ...address], csv)).toBe(0);
    expect(csv.stdoutText()).toBe(CSV);
  });

  it("fails saying so for a job without results", async () => {
    const io = captureIo();
    expect(await runCli(["results", "job-2", ...(await withTrainer({ jobs: [fakeJob({ jobId: "job-2" })] }))], io)).toBe(1);
    expect(io.stderrText()).toContain("has no results yet");
  });
});
