import { chmod, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { makeTempDir } from "@poseloop/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { probeTorch } from "./python.js";

// A fake `poseloop_torch` package on a temporary PYTHONPATH and fake interpreters on a temporary PATH: the
// probe's choice of interpreter and its reasons, without importing torch.

let dir: { path: string; remove: () => Promise<void> };
let engineDir: string;
let bin: string;

const HELLO = { type: "hello", protocol: 1, torch: "9.9.9", python: "3.11.2", cuda: { available: true, devices: [{ index: 0, name: "GPU" }] }, bf16: true, distributed: { gloo: true, nccl: true } };

async function script(path: string, body: string): Promise<string> {
  await writeFile(path, `#!/bin/sh\n${body}\n`);
  await chmod(path, 0o755);
  return path;
}

beforeAll(async () => {
  dir = await makeTempDir("poseloop-python-");
  engineDir = join(dir.path, "engine");
  bin = join(dir.path, "bin");
  await mkdir(join(engineDir, "poseloop_torch"), { recursive: true });
  await mkdir(bin);
  await writeFile(join(engineDir, "poseloop_torch", "__init__.py"), "");
  await writeFile(join(engineDir, "poseloop_torch", "__main__.py"), `import sys\nprint(${JSON.stringify(JSON.stringify(HELLO))})\nsys.exit(0)\n`);
  // The first python3 on PATH cannot import torch, as pyenv's cannot on the development machines.
  await script(join(bin, "python3"), `echo '{"type":"hello","protocol":1,"error":"No module named '"'"'torch'"'"'"}'; exit 3`);
});

afterAll(async () => dir?.remove());

describe("probeTorch", () => {
  it("falls back from a python3 without torch to /usr/bin/python3, saying nothing of the first", async () => {
    const probe = await probeTorch({ PATH: `${bin}:/usr/bin:/bin` }, { engineDir, timeoutMs: 10_000 });
    expect(probe).toEqual({ ok: true, python: "/usr/bin/python3", hello: HELLO });
  });

  it("gives the reason of every interpreter tried", async () => {
    const probe = await probeTorch({ PATH: `${bin}:/usr/bin:/bin` }, { engineDir: join(dir.path, "nowhere"), timeoutMs: 10_000 });
    expect(probe.ok).toBe(false);
    const reason = probe.ok ? "" : probe.reason;
    expect(reason).toMatch(/^python3: torch cannot be imported: No module named 'torch'; \/usr\/bin\/python3: exited with code 1 without a hello line: .*No module named poseloop_torch/);
  });

  it("tries only POSELOOP_PYTHON when it is set", async () => {
    expect(await probeTorch({ PATH: bin }, { python: "/nonexistent/python3", engineDir })).toEqual({ ok: false, reason: "/nonexistent/python3: not found" });
    const slow = await script(join(dir.path, "slow-python"), "sleep 5");
    expect(await probeTorch({}, { python: slow, engineDir, timeoutMs: 300 })).toEqual({ ok: false, reason: `${slow}: no answer to --probe within 0 s` });
    const old = await script(join(dir.path, "old-python"), `echo '{"type":"hello","protocol":2,"torch":"3.0"}'`);
    expect(await probeTorch({}, { python: old, engineDir })).toEqual({ ok: false, reason: `${old}: its poseloop_torch speaks protocol 2, this trainer speaks 1` });
  });
});
