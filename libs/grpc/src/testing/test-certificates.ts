import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** PEM file paths of a throwaway PKI: made at test time, removed by `remove()`, never committed. */
export interface TestPki {
  readonly dir: string;
  /**
   * Issues a certificate for `name` signed by CA `ca`; returns its cert and key files. `expired`: valid from
   * two days ago until yesterday instead of for a day from now.
   */
  issue(ca: string, name: string, options?: { server?: boolean; expired?: boolean }): Promise<{ cert: string; key: string }>;
  /** Creates CA `name` (self-signed); returns its certificate file. */
  ca(name: string): Promise<string>;
  remove(): Promise<void>;
}

/** A temporary folder in which `openssl` makes P-256 CAs and leaf certificates valid for a day (or expired). */
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
      if (options.expired === true) {
        // `openssl x509 -req` only counts days forward from now (-not_before/-not_after are OpenSSL 3.4+); the
        // `ca` command of 3.0 takes any -startdate/-enddate, given a database to record what it issued.
        const day = 24 * 60 * 60 * 1000;
        const config = file(`${ca}-ca.cnf`);
        await writeFile(config, caConfig(file(`${ca}.index`), file(`${ca}.serial`), dir));
        await writeFile(file(`${ca}.index`), "", { flag: "a" });
        await writeFile(file(`${ca}.serial`), `${randomBytes(8).toString("hex")}\n`);
        await run("openssl", [
          "ca", "-batch", "-config", config, "-cert", file(`${ca}.pem`), "-keyfile", file(`${ca}.key`), "-in", file(`${name}.csr`),
          "-out", file(`${name}.pem`), "-startdate", asn1Time(Date.now() - 2 * day), "-enddate", asn1Time(Date.now() - day),
          "-extfile", ext, "-notext",
        ]);
      } else {
        await run("openssl", [
          "x509", "-req", "-in", file(`${name}.csr`), "-CA", file(`${ca}.pem`), "-CAkey", file(`${ca}.key`), "-CAcreateserial",
          "-out", file(`${name}.pem`), "-days", "1", "-extfile", ext,
        ]);
      }
      return { cert: file(`${name}.pem`), key: file(`${name}.key`) };
    },
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}

/** A minimal `openssl ca` configuration: any subject, one database per CA, certificates written to `dir`. */
function caConfig(database: string, serial: string, dir: string): string {
  return [
    "[ca]",
    "default_ca = test_ca",
    "[test_ca]",
    `database = ${database}`,
    `serial = ${serial}`,
    `new_certs_dir = ${dir}`,
    "default_md = sha256",
    "policy = any_subject",
    "unique_subject = no",
    "[any_subject]",
    "commonName = supplied",
    "",
  ].join("\n");
}

/** `time` as the YYYYMMDDHHMMSSZ that `openssl ca -startdate/-enddate` takes. */
function asn1Time(time: number): string {
  return `${new Date(time).toISOString().replace(/[-:T]/g, "").slice(0, 14)}Z`;
}
