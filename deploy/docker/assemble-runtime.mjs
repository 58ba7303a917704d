#!/usr/bin/env node
// Assembles the files a service image runs, from two trees the Dockerfile builds:
//   --deps   a checkout of the npm manifests after `npm ci --omit=dev --workspace <service>`
//   --build  the full checkout after `npm run build` (every workspace's dist/)
// into --out: the production node_modules, and for the service and each @poseloop/* package it depends on
// (following `dependencies`, never `devDependencies`) its package.json and its compiled dist/. Nothing else
// from the sources, tests or dev tooling reaches the image.
//
//   node deploy/docker/assemble-runtime.mjs --service services/trainer --deps /deps --build /build --out /app
//
// Runs at image build time only, with Node's standard library.
import { cpSync, existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, realpathSync, rmSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    service: { type: "string" },
    deps: { type: "string" },
    build: { type: "string" },
    out: { type: "string" },
  },
  strict: true,
});
for (const name of ["service", "deps", "build", "out"]) {
  if (values[name] === undefined) fail(`--${name} is required`);
}
const service = values.service;
const deps = resolve(values.deps);
const build = resolve(values.build);
const out = resolve(values.out);
const SCOPE = "@poseloop/";

function fail(message) {
  process.stderr.write(`assemble-runtime: ${message}\n`);
  process.exit(1);
}

function readManifest(dir) {
  const file = join(dir, "package.json");
  if (!existsSync(file)) fail(`${relative(deps, file)} is missing`);
  return JSON.parse(readFileSync(file, "utf8"));
}

/** The workspace folder (relative to the repository root) npm linked for a package name. */
function workspaceOf(name) {
  const link = join(deps, "node_modules", name);
  if (!existsSync(link)) fail(`${name} is not installed in ${deps}/node_modules (is it a workspace?)`);
  return relative(deps, realpathSync(link));
}

// The service and every workspace package its production dependencies reach.
const closure = new Set();
const pending = [service];
while (pending.length > 0) {
  const dir = pending.pop();
  if (closure.has(dir)) continue;
  closure.add(dir);
  const manifest = readManifest(join(deps, dir));
  for (const name of Object.keys(manifest.dependencies ?? {})) {
    if (name.startsWith(SCOPE)) pending.push(workspaceOf(name));
  }
}

// Type declarations and incremental-build state are for compilers, not for the running service.
const runtimeFile = (path) => !/\.(?:d\.ts|d\.ts\.map|tsbuildinfo)$/.test(path);

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
cpSync(join(deps, "package.json"), join(out, "package.json"));
cpSync(join(deps, "node_modules"), join(out, "node_modules"), { recursive: true, verbatimSymlinks: true });
for (const dir of [...closure].sort()) {
  const dist = join(build, dir, "dist");
  if (!existsSync(dist)) fail(`${dir}/dist is missing: did \`npm run build\` build ${dir}?`);
  mkdirSync(join(out, dir), { recursive: true });
  cpSync(join(deps, dir, "package.json"), join(out, dir, "package.json"));
  cpSync(dist, join(out, dir, "dist"), { recursive: true, filter: runtimeFile });
  // npm nests a dependency under the workspace when its version conflicts with the hoisted one.
  const nested = join(deps, dir, "node_modules");
  if (existsSync(nested)) cpSync(nested, join(out, dir, "node_modules"), { recursive: true, verbatimSymlinks: true });
}

// npm links every workspace into node_modules; drop the links to packages the service does not run.
const scopeDir = join(out, "node_modules", SCOPE.slice(0, -1));
for (const entry of existsSync(scopeDir) ? readdirSync(scopeDir) : []) {
  const link = join(scopeDir, entry);
  // Resolved in the deps tree, which holds every workspace folder; the out tree holds the closure only.
  if (lstatSync(link).isSymbolicLink() && !closure.has(workspaceOf(SCOPE + entry))) rmSync(link, { force: true });
}

// onnxruntime-node ships native binaries for every OS and CPU (~250 MB); keep this platform's only.
const keep = join(process.platform, process.arch);
for (const ortDir of findPackages(join(out, "node_modules"), "onnxruntime-node")) {
  const bin = join(ortDir, "bin");
  if (!existsSync(bin)) continue;
  for (const napi of readdirSync(bin)) {
    for (const os of readdirSync(join(bin, napi))) {
      for (const arch of readdirSync(join(bin, napi, os))) {
        if (join(os, arch) !== keep) rmSync(join(bin, napi, os, arch), { recursive: true, force: true });
      }
      if (readdirSync(join(bin, napi, os)).length === 0) rmSync(join(bin, napi, os), { recursive: true });
    }
  }
}

const serviceManifest = readManifest(join(deps, service));
const entries = Object.values(serviceManifest.bin ?? {});
if (entries.length === 0) fail(`${service}/package.json names no "bin" entry point`);
for (const entry of entries) {
  if (!existsSync(join(out, service, entry))) fail(`${service}/${entry} (its "bin" entry point) was not built`);
}
process.stdout.write(`assembled ${service} with ${[...closure].filter((dir) => dir !== service).sort().join(", ")}\n`);

/** Every installed copy of a package under a node_modules tree (hoisted and nested). */
function findPackages(nodeModules, name) {
  const found = [];
  const walk = (dir) => {
    if (!existsSync(dir)) return;
    const candidate = join(dir, name);
    if (existsSync(join(candidate, "package.json"))) found.push(candidate);
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      const child = join(dir, entry.name);
      if (entry.name.startsWith("@")) {
        for (const scoped of readdirSync(child, { withFileTypes: true })) {
          if (scoped.isDirectory()) walk(join(child, scoped.name, "node_modules"));
        }
      } else {
        walk(join(child, "node_modules"));
      }
    }
  };
  walk(nodeModules);
  return found;
}
