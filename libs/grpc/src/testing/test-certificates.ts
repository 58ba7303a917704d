import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** PEM file paths of a throwaway PKI: made at test time, removed by `remove()`, never committed. */
export interface TestPki {
  readonly dir: string;
  /** Issues a certificate for `name` signed by CA `ca`; returns its cert and key files. */
  issue(ca: string, name: string, options?: { server?: boolean }): Promise<{ cert: string; key: string }>;
  /** Creates CA `name` (self-signed); returns its certificate file. */
  ca(name: string): Promise<string>;
  remove(): Promise<void>;
}

/** A temporary folder in which `openssl` makes P-256 CAs and leaf certificates valid for a day. */
export async function createTestPki(): Promise<TestPki> {
  const dir = await mkdtemp(join(tmpdir(), "poseloop-pki-"));
  const file = (name: string): string => join(dir, name);
  const ecKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  return {
    dir,
    async ca(name) {
      await run("openssl", ["req", "-x509", ...ecKey, "-keyout", file(`${name}.key`), "-out", file(`${name}.pem`), "-days", "1", "-subj", `/CN=${name}`]);
      return file(`${name}.pem`);
    },
    async issue(ca, name, options = {}) {
      const ext = file(`${name}.ext`);
      const lines = options.server === false
        ? ["extendedKeyUsage=clientAuth"]
        : ["subjectAltName=DNS:localhost,IP:127.0.0.1", "extendedKeyUsage=serverAuth"];
      await writeFile(ext, `${lines.join("\n")}\n`);
      await run("openssl", ["req", ...ecKey, "-keyout", file(`${name}.key`), "-out", file(`${name}.csr`), "-subj", `/CN=${name}`]);
      await run("openssl", [
        "x509", "-req", "-in", file(`${name}.csr`), "-CA", file(`${ca}.pem`), "-CAkey", file(`${ca}.key`), "-CAcreateserial",
        "-out", file(`${name}.pem`), "-days", "1", "-extfile", ext,
      ]);
      return { cert: file(`${name}.pem`), key: file(`${name}.key`) };
    },
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}
