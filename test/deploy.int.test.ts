// Checks deploy/ against the code it deploys: every manifest parses, every object has what its kind needs,
// ports and entry points agree with the services, and every POSELOOP_* / OTEL_* variable the manifests set
// is one the services' real config loaders read. It starts no service and needs no Docker or cluster.
import { connectNats, ModelRegistry, NatsBus } from "@poseloop/bus";
import { PromotionMode, PromotionVerdict } from "@poseloop/proto/poseloop/registry/v1/registry_pb";
import { AppError, Code, sleep, type Env, type LogFields, type Logger } from "@poseloop/core";
import { loadConfig as loadInferencerConfig, startInferencer } from "@poseloop/inferencer";
import { buildTestModel, publishTestModel } from "@poseloop/inferencer/testing";
import { findNatsServerBinary, makeTempDir, take } from "@poseloop/testkit";
import { loadConfig as loadTrainerConfig, startTrainer } from "@poseloop/trainer";
import { execFile, spawn } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const DEPLOY = join(ROOT, "deploy");
const K8S = join(DEPLOY, "k8s");
const NAMESPACE = "poseloop";

type Json = Record<string, unknown>;

// ---------------------------------------------------------------------------------------------------------
// Reading files

/** Every document of a YAML stream as plain values; throws on any error or warning (duplicate keys included). */
function parseYaml(text: string, where: string): unknown[] {
  const documents = Array.from(parseAllDocuments(text, { merge: true, prettyErrors: true, uniqueKeys: true }));
  const problems = documents.flatMap((doc) => [...doc.errors, ...doc.warnings].map((error) => `${where}: ${error.message}`));
  if (problems.length > 0) throw new Error(problems.join("\n"));
  return documents.map((doc) => doc.toJS({ maxAliasCount: 100 }) as unknown).filter((value) => value !== null && value !== undefined);
}

function readYaml(path: string): unknown[] {
  return parseYaml(readFileSync(path, "utf8"), relative(ROOT, path));
}

function readYamlObject(path: string): Json {
  const [document, ...rest] = readYaml(path);
  if (!isObject(document) || rest.length > 0) throw new Error(`${relative(ROOT, path)}: expected one mapping document`);
  return document;
}

function filesUnder(dir: string, keep: (name: string) => boolean): string[] {
  return readdirSync(dir, { recursive: true, encoding: "utf8" })
    .map((name) => join(dir, name))
    .filter((path) => statSync(path).isFile() && keep(basename(path)))
    .sort();
}

const isObject = (value: unknown): value is Json => typeof value === "object" && value !== null && !Array.isArray(value);
const asObject = (value: unknown): Json => (isObject(value) ? value : {});
const asArray = (value: unknown): unknown[] => (Array.isArray(value) ? (value as unknown[]) : []);
const asString = (value: unknown): string | undefined => (typeof value === "string" ? value : undefined);

/** Follows keys (and array indexes) through parsed YAML/JSON; undefined where the path is absent. */
function at(value: unknown, ...path: (string | number)[]): unknown {
  let current = value;
  for (const key of path) {
    if (typeof key === "number") current = Array.isArray(current) ? (current as unknown[])[key] : undefined;
    else current = isObject(current) ? current[key] : undefined;
  }
  return current;
}

/** The TypeScript the services and libraries ship (no tests, no build output), for name look-ups. */
const shippedSource = ["libs", "services"]
  .flatMap((top) => readdirSync(join(ROOT, top)).map((pkg) => join(ROOT, top, pkg, "src")))
  .filter((dir) => existsSync(dir))
  .flatMap((dir) => filesUnder(dir, (name) => name.endsWith(".ts") && !name.endsWith(".test.ts")))
  .filter((path) => !path.includes(join("src", "gen")))
  .map((path) => readFileSync(path, "utf8"))
  .join("\n");

// ---------------------------------------------------------------------------------------------------------
// The services and their configuration

interface LoadedConfig {
  readonly grpc: { readonly port: number; readonly drainTimeoutMs: number };
  readonly telemetryWarnings: readonly string[];
}

interface ServiceSpec {
  readonly name: "trainer" | "inferencer";
  readonly loadConfig: (env: Env) => LoadedConfig;
}

const TRAINER: ServiceSpec = { name: "trainer", loadConfig: loadTrainerConfig };
const INFERENCER: ServiceSpec = { name: "inferencer", loadConfig: loadInferencerConfig };
const SERVICES: readonly ServiceSpec[] = [TRAINER, INFERENCER];

const SETTING = /^(POSELOOP|OTEL)_/;

/**
 * Loads a service's configuration from `env` through its real loader, recording every variable the loader
 * looks at. A POSELOOP_* or OTEL_* name the loader never reads is a typo or a setting the service does not
 * have: the loaders ignore unknown names, so only this catches them.
 */
function loadRecordingReads(service: ServiceSpec, env: Record<string, string>): { config: LoadedConfig; unread: string[] } {
  const read = new Set<string>();
  const recording = new Proxy(env, {
    get(target, name, receiver) {
      if (typeof name === "string") read.add(name);
      return Reflect.get(target, name, receiver) as unknown;
    },
  });
  const config = service.loadConfig(recording);
  return { config, unread: Object.keys(env).filter((name) => SETTING.test(name) && !read.has(name)).sort() };
}

/** Runs the loader on a manifest's env and lists what is wrong with it, as "<where>: <problem>". */
function configProblems(service: ServiceSpec, env: Record<string, string>, where: string): { config?: LoadedConfig; problems: string[] } {
  try {
    const { config, unread } = loadRecordingReads(service, env);
    const problems = [
      ...unread.map((name) => `${where}: ${name} is not read by the ${service.name}'s configuration (typo, or a setting it does not have)`),
      ...config.telemetryWarnings.map((warning) => `${where}: ${warning}`),
    ];
    return { config, problems };
  } catch (error) {
    return { problems: [`${where}: the ${service.name} refuses this configuration: ${(error as Error).message}`] };
  }
}

const defaultPort = (service: ServiceSpec): number => service.loadConfig({}).grpc.port;

// ---------------------------------------------------------------------------------------------------------
// Images

/** A reference names an immutable version: a digest, or a tag with a version number that is not "latest". */
function imageProblems(reference: string, where: string): string[] {
  if (/@sha256:[0-9a-f]{64}$/.test(reference)) return [];
  const name = reference.slice(reference.lastIndexOf("/") + 1);
  const tag = name.includes(":") ? name.slice(name.indexOf(":") + 1) : "";
  if (tag === "") return [`${where}: image ${reference} has no tag (it floats to latest)`];
  if (tag === "latest" || !/\d/.test(tag)) return [`${where}: image ${reference} is not pinned to a version`];
  return [];
}

const repositoryOf = (reference: string): string => reference.replace(/@.*$/, "").replace(/:[^/:]*$/, "");

// ---------------------------------------------------------------------------------------------------------
// Dockerfiles

interface Instruction {
  readonly op: string;
  readonly args: string;
}

/** Instructions with continuation lines joined and comments dropped. */
function parseDockerfile(text: string): Instruction[] {
  const instructions: Instruction[] = [];
  let pending = "";
  for (const line of text.split("\n")) {
    if (/^\s*#/.test(line)) continue;
    if (line.trimEnd().endsWith("\\")) {
      pending += `${line.trimEnd().slice(0, -1)} `;
      continue;
    }
    const full = `${pending}${line}`.trim();
    pending = "";
    if (full === "") continue;
    const op = full.split(/\s+/, 1)[0] ?? "";
    instructions.push({ op: op.toUpperCase(), args: full.slice(op.length).trim() });
  }
  return instructions;
}

interface Stage {
  readonly image: string;
  readonly name: string | undefined;
  readonly instructions: Instruction[];
}

function dockerStages(instructions: Instruction[]): { args: Map<string, string>; stages: Stage[] } {
  const args = new Map<string, string>();
  const stages: Stage[] = [];
  const expand = (value: string): string => value.replace(/\$\{(\w+)\}/g, (_, name: string) => args.get(name) ?? `\${${name}}`);
  for (const instruction of instructions) {
    if (instruction.op === "FROM") {
      const words = instruction.args.split(/\s+/).filter((word) => !word.startsWith("--"));
      const asIndex = words.findIndex((word) => word.toUpperCase() === "AS");
      stages.push({ image: expand(words[0] ?? ""), name: asIndex >= 0 ? words[asIndex + 1] : undefined, instructions: [] });
    } else if (stages.length === 0 && instruction.op === "ARG") {
      const [name = "", value] = instruction.args.split("=", 2);
      if (value !== undefined) args.set(name, expand(value));
    } else {
      stages.at(-1)?.instructions.push(instruction);
    }
  }
  return { args, stages };
}

// ---------------------------------------------------------------------------------------------------------
// Compose

const composePath = join(DEPLOY, "compose.yaml");
const compose = readYamlObject(composePath);
const composeServices = asObject(compose["services"]);

/** Compose's ${VAR}, ${VAR:-default} and ${VAR-default}; a variable without a default needs a sample here. */
const COMPOSE_SAMPLES: Readonly<Record<string, string>> = {};

function interpolate(value: string, where: string): string {
  return value.replace(/\$\$|\$\{(\w+)(?:(:?-)([^}]*))?\}|\$(\w+)/g, (match, braced?: string, op?: string, fallback?: string, bare?: string) => {
    if (match === "$$") return "$";
    const name = braced ?? bare ?? "";
    if (op !== undefined) return fallback ?? "";
    const sample = COMPOSE_SAMPLES[name];
    if (sample === undefined) throw new Error(`${where}: ${match} has no default and no sample value in this test`);
    return sample;
  });
}

function composeEnv(service: string): Record<string, string> {
  const raw = at(composeServices, service, "environment");
  const entries: [string, unknown][] = Array.isArray(raw)
    ? raw.map((item) => String(item).split(/=(.*)/s, 2) as [string, unknown])
    : Object.entries(asObject(raw));
  return Object.fromEntries(
    entries.map(([name, value]) => {
      const text = typeof value === "string" ? value : typeof value === "number" || typeof value === "boolean" ? String(value) : value === null ? "" : undefined;
      if (text === undefined) throw new Error(`compose ${service}.${name}: an environment value must be a scalar`);
      return [name, interpolate(text, `compose ${service}.${name}`)];
    }),
  );
}

/** Container ports a compose service publishes ("[ip:]host:container[/proto]" or the long form). */
function publishedTargets(service: string): number[] {
  return asArray(at(composeServices, service, "ports")).map((port) =>
    isObject(port) ? Number(port["target"]) : Number(String(port).replace(/\/\w+$/, "").split(":").at(-1)),
  );
}

/** A compose service's volumes as source and target, short ("src:dst[:ro]") or long syntax. */
function composeVolumes(service: string): { source: string; target: string }[] {
  return asArray(at(composeServices, service, "volumes")).map((volume) =>
    isObject(volume)
      ? { source: String(volume["source"]), target: String(volume["target"]) }
      : { source: String(volume).split(":")[0] ?? "", target: String(volume).split(":")[1] ?? "" },
  );
}

/** Files under deploy/secrets/ are made by make-tokens.sh, not committed: the NATS credentials tests check them. */
const isGeneratedSecret = (source: string): boolean => source.startsWith("./secrets/");

// ---------------------------------------------------------------------------------------------------------
// Kubernetes

const kustomization = readYamlObject(join(K8S, "kustomization.yaml"));
const k8sObjectFiles = filesUnder(K8S, (name) => /\.ya?ml$/.test(name) && name !== "kustomization.yaml" && !name.endsWith("-values.yaml"));
const k8sObjects = k8sObjectFiles.flatMap((path) => readYaml(path).map((object) => ({ file: relative(K8S, path), object: asObject(object) })));
const ofKind = (kind: string): Json[] => k8sObjects.filter(({ object }) => object["kind"] === kind).map(({ object }) => object);
const nameOf = (object: unknown): string => asString(at(object, "metadata", "name")) ?? "";
const configMaps = new Map(ofKind("ConfigMap").map((map) => [nameOf(map), asObject(map["data"])]));
const deployments = new Map(ofKind("Deployment").map((deployment) => [nameOf(deployment), deployment]));

const API_VERSIONS: Readonly<Record<string, string>> = {
  Namespace: "v1",
  ServiceAccount: "v1",
  ConfigMap: "v1",
  Service: "v1",
  Deployment: "apps/v1",
  HorizontalPodAutoscaler: "autoscaling/v2",
  PodDisruptionBudget: "policy/v1",
  PersistentVolumeClaim: "v1",
  NetworkPolicy: "networking.k8s.io/v1",
};

/** Label selector `matchLabels` (or a Service's plain selector) matches these labels. */
const selects = (selector: unknown, labels: unknown): boolean => {
  const wanted = Object.entries(asObject(selector));
  return wanted.length > 0 && wanted.every(([key, value]) => asObject(labels)[key] === value);
};

/** The environment a container starts with: its envFrom ConfigMaps, then its env (downward API sampled). */
function containerEnv(container: unknown, podName: string, where: string): { env: Record<string, string>; problems: string[] } {
  const env: Record<string, string> = {};
  const problems: string[] = [];
  for (const source of asArray(at(container, "envFrom"))) {
    const name = asString(at(source, "configMapRef", "name"));
    const data = name === undefined ? undefined : configMaps.get(name);
    if (data === undefined) problems.push(`${where}: envFrom ${JSON.stringify(source)} is not a ConfigMap in deploy/k8s`);
    else for (const [key, value] of Object.entries(data)) env[key] = String(value);
  }
  const samples: Readonly<Record<string, string>> = { "metadata.name": `${podName}-5d8f7c9b6d-x7k2p`, "metadata.namespace": NAMESPACE, "status.podIP": "10.1.2.3", "spec.nodeName": "gpu-node-1" };
  for (const variable of asArray(at(container, "env"))) {
    const name = asString(at(variable, "name")) ?? "";
    const value = at(variable, "value");
    const fieldPath = asString(at(variable, "valueFrom", "fieldRef", "fieldPath"));
    const mapKey = at(variable, "valueFrom", "configMapKeyRef");
    if (typeof value === "string") env[name] = value;
    else if (value !== undefined) problems.push(`${where}: env ${name} must be a string, not ${JSON.stringify(value)}`);
    else if (fieldPath !== undefined && samples[fieldPath] !== undefined) env[name] = samples[fieldPath];
    else if (isObject(mapKey) && configMaps.get(String(mapKey["name"]))?.[String(mapKey["key"])] !== undefined) env[name] = String(configMaps.get(String(mapKey["name"]))?.[String(mapKey["key"])]);
    else problems.push(`${where}: env ${name} has no value this test can resolve`);
  }
  return { env, problems };
}

/** The container port a probe or Service port refers to (by name or number), if any. */
function containerPort(container: unknown, reference: unknown): number | undefined {
  const ports = asArray(at(container, "ports"));
  const match = ports.find((port) => at(port, "name") === reference || at(port, "containerPort") === reference);
  const number = at(match, "containerPort");
  return typeof number === "number" ? number : undefined;
}

function probePortProblems(container: unknown, probe: unknown, where: string): string[] {
  if (!isObject(probe)) return [`${where} is missing`];
  const handlers = ["grpc", "tcpSocket", "httpGet", "exec"].filter((key) => probe[key] !== undefined);
  if (handlers.length !== 1) return [`${where} needs exactly one of grpc, tcpSocket, httpGet, exec`];
  const handler = handlers[0] ?? "";
  if (handler === "exec") return [];
  const port = at(probe, handler, "port");
  // A grpc probe takes a port number only, never a port name.
  if (handler === "grpc" && typeof port !== "number") return [`${where}: a grpc probe's port must be a number, not ${JSON.stringify(port)}`];
  return containerPort(container, port) === undefined ? [`${where}: port ${JSON.stringify(port)} is not a port of the container`] : [];
}

// ---------------------------------------------------------------------------------------------------------

describe("deploy/", () => {
  it("parses every YAML file, every document of it, with no error, warning or duplicate key", () => {
    const files = filesUnder(DEPLOY, (name) => /\.ya?ml$/.test(name));
    expect(files.map((path) => relative(DEPLOY, path))).toEqual(
      expect.arrayContaining(["compose.yaml", "otel/collector.yaml", "k8s/kustomization.yaml", "k8s/nats-values.yaml"]),
    );
    for (const path of files) expect(readYaml(path).length, relative(ROOT, path)).toBeGreaterThan(0);
    // The parser is strict where Kubernetes and Compose are.
    expect(() => parseYaml("a: 1\na: 2\n", "dup.yaml")).toThrow(/dup\.yaml.*unique/s);
    expect(() => parseYaml("a: [1, 2\n", "bad.yaml")).toThrow(/bad\.yaml/);
    expect(parseYaml("a: 1\n---\nb: 2\n", "two.yaml")).toEqual([{ a: 1 }, { b: 2 }]);
  });

  it("flags a variable the services do not read", () => {
    const { problems } = configProblems(INFERENCER, { POSELOOP_NATS_URL: "nats://nats:4222", POSELOOP_NATS_URLS: "nats://x:4222", POSELOOP_MODEL: "demo" }, "sample");
    expect(problems).toEqual([expect.stringContaining("POSELOOP_NATS_URLS is not read")]);
    expect(configProblems(INFERENCER, { POSELOOP_MODEL: "Bad Name" }, "sample").problems).toEqual([expect.stringContaining("refuses this configuration")]);
  });

  describe("Dockerfiles", () => {
    const ignorePatterns = (service: string): string[] =>
      readFileSync(join(DEPLOY, "docker", `${service}.Dockerfile.dockerignore`), "utf8")
        .split("\n")
        .map((line) => line.trim())
        .filter((line) => line !== "" && !line.startsWith("#"));

    for (const service of SERVICES) {
      it(`${service.name}: multi-stage, production deps only, non-root, exposes its port and starts its built entry point`, () => {
        const dockerfile = join(DEPLOY, "docker", `${service.name}.Dockerfile`);
        const { args, stages } = dockerStages(parseDockerfile(readFileSync(dockerfile, "utf8")));
        const problems: string[] = [];
        const stageNames = new Set(stages.map((stage) => stage.name));
        expect(stages.length).toBeGreaterThanOrEqual(2);
        for (const stage of stages) {
          if (!stageNames.has(stage.image)) problems.push(...imageProblems(stage.image, `${service.name}.Dockerfile FROM`));
        }
        for (const [name, value] of args) {
          if (name.endsWith("_IMAGE") && !stageNames.has(value)) problems.push(...imageProblems(value, `${service.name}.Dockerfile ARG ${name}`));
        }

        // Node: the version the workspace supports (package.json engines: >=20.19 <21 || >=22).
        const nodeTag = /^node:(\d+)\.(\d+)\.\d+-/.exec(args.get("NODE_IMAGE") ?? "");
        const [major, minor] = [Number(nodeTag?.[1]), Number(nodeTag?.[2])];
        expect((major === 20 && minor >= 19) || major >= 22, `NODE_IMAGE ${args.get("NODE_IMAGE")} against engines`).toBe(true);

        const runs = stages.flatMap((stage) => stage.instructions.filter((i) => i.op === "RUN").map((i) => i.args));
        expect(runs.some((run) => /\bnpm ci(?!\s+--omit)/.test(run)), "a build stage runs `npm ci`").toBe(true);
        expect(runs.some((run) => run.includes(`npm run build -- services/${service.name}`)), "a build stage runs `npm run build`").toBe(true);
        expect(runs.some((run) => run.includes(`npm ci --omit=dev --workspace services/${service.name}`)), "production deps of this workspace only").toBe(true);
        expect(runs.some((run) => run.includes(`assemble-runtime.mjs --service services/${service.name}`))).toBe(true);

        const final = stages.at(-1) as Stage;
        const last = (op: string): string | undefined => final.instructions.filter((i) => i.op === op).at(-1)?.args;
        const user = /^(\d+)(?::(\d+))?$/.exec(last("USER") ?? "");
        expect(user, `final stage USER ${last("USER")} must be a numeric uid`).not.toBeNull();
        expect(Number(user?.[1])).toBeGreaterThan(0);
        expect(Number(user?.[2] ?? 1)).toBeGreaterThan(0);
        expect(last("EXPOSE")?.split(/\s+/).map((port) => Number(port.replace(/\/\w+$/, "")))).toEqual([defaultPort(service)]);

        // The entry point is what `npm run build` emits for the service's "bin".
        const entrypoint = JSON.parse(last("ENTRYPOINT") ?? "null") as unknown;
        const entry = `services/${service.name}/dist/main.js`;
        expect(entrypoint).toEqual(["node", entry]);
        const manifest = JSON.parse(readFileSync(join(ROOT, "services", service.name, "package.json"), "utf8")) as Json;
        expect(Object.values(asObject(manifest["bin"]))).toContain("./dist/main.js");
        const tsconfig = JSON.parse(readFileSync(join(ROOT, "services", service.name, "tsconfig.json"), "utf8")) as Json;
        expect(at(tsconfig, "compilerOptions", "outDir")).toBe("dist");
        expect(at(tsconfig, "compilerOptions", "rootDir")).toBe("src");
        expect(existsSync(join(ROOT, "services", service.name, "src", "main.ts"))).toBe(true);

        // Settings baked into the image are held to the same rule as the manifests'.
        const baked = Object.fromEntries(
          final.instructions
            .filter((i) => i.op === "ENV")
            .flatMap((i) => [...i.args.matchAll(/(\w+)=(\S*)/g)].map((match) => [match[1] ?? "", match[2] ?? ""])),
        );
        problems.push(...configProblems(service, baked, `${service.name}.Dockerfile ENV`).problems);
        expect(problems).toEqual([]);
      });
    }

    it("the trainer runs on a CUDA runtime image when asked, on Node's slim image by default", () => {
      const { args, stages } = dockerStages(parseDockerfile(readFileSync(join(DEPLOY, "docker", "trainer.Dockerfile"), "utf8")));
      expect(args.get("RUNTIME_IMAGE")).toBe(args.get("NODE_IMAGE"));
      const text = readFileSync(join(DEPLOY, "docker", "trainer.Dockerfile"), "utf8");
      expect(text).toMatch(/^FROM \$\{RUNTIME_IMAGE\} AS runtime$/m);
      // Node is copied in, since a CUDA image has none.
      expect(stages.at(-1)?.instructions.some((i) => i.op === "COPY" && i.args.includes("/usr/local/bin/node"))).toBe(true);
      const documented = /RUNTIME_IMAGE=(nvidia\/cuda:\S+)/.exec(text)?.[1] ?? "";
      expect(imageProblems(documented, "documented CUDA image")).toEqual([]);
    });

    it("the GPU trainer: PyTorch's CUDA runtime image, pinned, with Node, the engine and its Python; compose.gpu.yaml builds it", () => {
      const text = readFileSync(join(DEPLOY, "docker", "trainer-gpu.Dockerfile"), "utf8");
      const { args, stages } = dockerStages(parseDockerfile(text));
      const base = args.get("PYTORCH_IMAGE") ?? "";
      expect(imageProblems(base, "trainer-gpu.Dockerfile ARG PYTORCH_IMAGE")).toEqual([]);
      expect(base).toMatch(/^pytorch\/pytorch:[\d.]+-cuda[\d.]+-cudnn\d+-runtime$/);
      expect(stages.at(-1)?.image).toBe(base);
      const final = stages.at(-1)?.instructions ?? [];
      expect(final.some((i) => i.op === "COPY" && i.args.includes("/usr/local/bin/node"))).toBe(true);
      expect(final.some((i) => i.op === "ENV" && /\bPOSELOOP_PYTHON=\/\S+/.test(i.args))).toBe(true);
      expect(final.filter((i) => i.op === "USER").at(-1)?.args).toBe("10001:10001");
      expect(JSON.parse(final.filter((i) => i.op === "ENTRYPOINT").at(-1)?.args ?? "null")).toEqual(["node", "services/trainer/dist/main.js"]);
      const gpuOverride = readYamlObject(join(DEPLOY, "compose.gpu.yaml"));
      expect(at(gpuOverride, "services", "trainer", "build", "dockerfile")).toBe("deploy/docker/trainer-gpu.Dockerfile");
      expect(String(at(gpuOverride, "services", "trainer", "shm_size"))).toMatch(/^\d+[mg]b$/);
    });

    it("each Dockerfile has its own ignore file: no host node_modules or dist in the context, the scripts kept", () => {
      const [trainer, inferencer] = [ignorePatterns("trainer"), ignorePatterns("inferencer")];
      expect(inferencer).toEqual(trainer);
      expect(trainer).toEqual(expect.arrayContaining(["**/node_modules", "**/dist", ".git", "deploy", "!deploy/docker/*.mjs"]));
      for (const script of ["assemble-runtime.mjs", "grpc-health-check.mjs"]) expect(existsSync(join(DEPLOY, "docker", script))).toBe(true);
    });
  });

  describe("compose", () => {
    it("builds the services from the Dockerfiles, mounts files that exist, and pins every image", () => {
      const problems: string[] = [];
      for (const [name, service] of Object.entries(composeServices)) {
        const image = asString(at(service, "image"));
        if (image === undefined) problems.push(`compose ${name}: no image`);
        else problems.push(...imageProblems(image, `compose ${name}`));
        const build = at(service, "build");
        if (build !== undefined) {
          const context = resolve(DEPLOY, asString(at(build, "context")) ?? ".");
          if (context !== resolve(ROOT)) problems.push(`compose ${name}: the build context must be the repository root`);
          const dockerfile = join(context, asString(at(build, "dockerfile")) ?? "Dockerfile");
          if (!existsSync(dockerfile)) problems.push(`compose ${name}: ${relative(ROOT, dockerfile)} does not exist`);
        }
        for (const { source } of composeVolumes(name)) {
          if (source.startsWith(".") && !isGeneratedSecret(source) && !existsSync(resolve(DEPLOY, source))) problems.push(`compose ${name}: ${source} does not exist`);
        }
        for (const dependency of Object.keys(Array.isArray(at(service, "depends_on")) ? Object.fromEntries(asArray(at(service, "depends_on")).map((d) => [String(d), {}])) : asObject(at(service, "depends_on")))) {
          if (!(dependency in composeServices)) problems.push(`compose ${name}: depends on unknown service ${dependency}`);
          else if (at(service, "depends_on", dependency, "condition") === "service_healthy" && at(composeServices, dependency, "healthcheck") === undefined) {
            problems.push(`compose ${name}: waits for ${dependency} to be healthy, which has no healthcheck`);
          }
        }
      }
      for (const service of SERVICES) {
        expect(at(composeServices, service.name, "build", "dockerfile")).toBe(`deploy/docker/${service.name}.Dockerfile`);
      }
      const override = readYamlObject(join(DEPLOY, "compose.gpu.yaml"));
      for (const name of Object.keys(asObject(override["services"]))) {
        if (!(name in composeServices)) problems.push(`compose.gpu.yaml: unknown service ${name}`);
        const image = asString(at(override, "services", name, "image"));
        if (image !== undefined) problems.push(...imageProblems(image, `compose.gpu.yaml ${name}`));
      }
      expect(problems).toEqual([]);
    });

    for (const service of SERVICES) {
      it(`${service.name}: its environment is accepted by the real config loader, and its port is the one it listens on`, () => {
        const env = composeEnv(service.name);
        const { config, problems } = configProblems(service, env, `compose ${service.name}`);
        expect(problems).toEqual([]);
        const port = config?.grpc.port;
        expect(port).toBe(defaultPort(service));
        expect(publishedTargets(service.name)).toContain(port);
        const healthcheck = asArray(at(composeServices, service.name, "healthcheck", "test")).map(String);
        expect(healthcheck.slice(0, 3)).toEqual(["CMD", "node", "bin/grpc-health-check.mjs"]);
        expect(healthcheck.at(-1)).toBe(`127.0.0.1:${port}`);
        // The addresses name services of this compose file, on the ports those listen on.
        expect(new URL(env["POSELOOP_NATS_URL"] ?? "").host).toBe("nats:4222");
        expect(new URL(env["OTEL_EXPORTER_OTLP_ENDPOINT"] ?? "").host).toBe("otel-collector:4318");
        expect(env["OTEL_SERVICE_NAME"]).toBe(`poseloop-${service.name}`);
      });
    }

    it("gives both services token files as secrets, kept out of git, and the trainer volumes to write its work to", () => {
      const secrets = asObject(compose["secrets"]);
      for (const service of SERVICES) {
        const variable = `POSELOOP_${service.name.toUpperCase()}_TOKENS_FILE`;
        const path = composeEnv(service.name)[variable] ?? "";
        const secret = path.replace(/^\/run\/secrets\//, "");
        expect(asArray(at(composeServices, service.name, "secrets")).map(String), `compose ${service.name}`).toContain(secret);
        expect(String(at(secrets, secret, "file"))).toMatch(/^\.\/secrets\/[\w-]+\.tokens$/);
      }
      expect(readFileSync(join(DEPLOY, "secrets", ".gitignore"), "utf8")).toMatch(/^\*\.tokens$/m);
      // A read-only root filesystem: every folder the trainer writes is a volume.
      const trainer = composeEnv("trainer");
      const mounts = composeVolumes("trainer").map((volume) => volume.target);
      expect(at(composeServices, "trainer", "read_only")).toBe(true);
      expect(mounts).toContain(trainer["POSELOOP_WORK_DIR"]);
      expect(mounts).toContain(trainer["POSELOOP_DATA_ROOT"]);
    });

    it("publishes the inferencer on all interfaces and starts NATS from deploy/nats/nats.conf, JetStream on a volume", () => {
      expect(asArray(at(composeServices, "inferencer", "ports"))).toContain(`${defaultPort(INFERENCER)}:${defaultPort(INFERENCER)}`);
      const command = asArray(at(composeServices, "nats", "command")).map(String);
      const configPath = command[command.indexOf("-c") + 1] ?? "";
      expect(command.slice(0, 2)).toEqual(["nats-server", "-c"]);
      expect(composeVolumes("nats")).toContainEqual({ source: "./nats/nats.conf", target: configPath });
      // The store of nats.conf is the nats-data volume; its monitor port is the one the healthcheck asks.
      const natsConf = readFileSync(join(DEPLOY, "nats", "nats.conf"), "utf8");
      const storeDir = /^\s*store_dir:\s*(\S+)\s*$/m.exec(natsConf)?.[1];
      expect(composeVolumes("nats")).toContainEqual({ source: "nats-data", target: storeDir });
      const monitorPort = /^http_port:\s*(\d+)\s*$/m.exec(natsConf)?.[1];
      expect(asArray(at(composeServices, "nats", "healthcheck", "test")).map(String).at(-1)).toContain(`127.0.0.1:${monitorPort}/healthz`);
      expect(asString(at(composeServices, "nats", "image"))).toMatch(/^nats:2\.10\./);
      expect(at(composeServices, "jaeger", "environment", "COLLECTOR_OTLP_ENABLED")).toBe("true");
      expect(asArray(at(composeServices, "jaeger", "ports"))).toContain("127.0.0.1:16686:16686");
    });
  });

  describe("OpenTelemetry collector", () => {
    /** Pipelines name only components the config defines ("otlp/jaeger" is a named "otlp"). */
    function pipelineProblems(config: Json, where: string): string[] {
      const problems: string[] = [];
      const pipelines = Object.entries(asObject(at(config, "service", "pipelines"))).filter(([, pipeline]) => pipeline !== null);
      if (pipelines.length === 0) problems.push(`${where}: no pipelines`);
      for (const [name, pipeline] of pipelines) {
        for (const kind of ["receivers", "processors", "exporters"]) {
          for (const component of asArray(at(pipeline, kind)).map(String)) {
            if (at(config, kind, component) === undefined || at(config, kind, component) === null) {
              problems.push(`${where}: pipeline ${name} uses ${kind} ${component}, which is not defined`);
            }
          }
        }
      }
      return problems;
    }

    it("receives OTLP on 4317/4318 and sends traces, batched, to Jaeger, Tempo and debug", () => {
      const config = readYamlObject(join(DEPLOY, "otel", "collector.yaml"));
      expect(pipelineProblems(config, "otel/collector.yaml")).toEqual([]);
      expect(at(config, "receivers", "otlp", "protocols", "grpc", "endpoint")).toBe("0.0.0.0:4317");
      expect(at(config, "receivers", "otlp", "protocols", "http", "endpoint")).toBe("0.0.0.0:4318");
      const traces = at(config, "service", "pipelines", "traces");
      expect(at(traces, "processors", 0)).toBe("memory_limiter");
      expect(asArray(at(traces, "processors"))).toContain("batch");
      expect(asArray(at(traces, "exporters"))).toEqual(expect.arrayContaining(["otlp/jaeger", "otlp/tempo", "debug"]));
      // Exporter hosts are compose services; compose mounts this file as the collector's config.
      for (const exporter of ["otlp/jaeger", "otlp/tempo"]) {
        const host = (asString(at(config, "exporters", exporter, "endpoint")) ?? "").split(":")[0] ?? "";
        expect(composeServices, `${exporter} → ${host}`).toHaveProperty(host);
      }
      expect(asArray(at(composeServices, "otel-collector", "volumes")).map(String)).toContain("./otel/collector.yaml:/etc/otelcol-contrib/config.yaml:ro");
      expect(asArray(at(composeServices, "otel-collector", "command"))).toContain("--config=/etc/otelcol-contrib/config.yaml");
    });

    it("Tempo takes OTLP where the collector sends it and keeps the consumer spans TraceQL metrics need", () => {
      const collector = readYamlObject(join(DEPLOY, "otel", "collector.yaml"));
      const tempo = readYamlObject(join(DEPLOY, "tempo", "tempo.yaml"));
      const port = (asString(at(collector, "exporters", "otlp/tempo", "endpoint")) ?? "").split(":")[1];
      expect(String(at(tempo, "distributor", "receivers", "otlp", "protocols", "grpc", "endpoint")).split(":")[1]).toBe(port);
      expect(asArray(at(tempo, "overrides", "defaults", "metrics_generator", "processors"))).toContain("local-blocks");
      // frame and model.load spans are CONSUMER spans; local-blocks keeps SERVER spans only by default.
      expect(at(tempo, "metrics_generator", "processor", "local_blocks", "filter_server_spans")).toBe(false);
      expect(asArray(at(composeServices, "tempo", "volumes")).map(String)).toContain("./tempo/tempo.yaml:/etc/tempo/tempo.yaml:ro");
      expect(asArray(at(composeServices, "tempo", "command"))).toContain("-config.file=/etc/tempo/tempo.yaml");
    });

    it("the in-cluster collector values define what their pipelines use and export to Tempo", () => {
      const values = readYamlObject(join(K8S, "otel-collector-values.yaml"));
      const config = asObject(values["config"]);
      expect(pipelineProblems(config, "k8s/otel-collector-values.yaml")).toEqual([]);
      expect(asArray(at(config, "service", "pipelines", "traces", "exporters"))).toContain("otlp/tempo");
      expect(imageProblems(`${String(at(values, "image", "repository"))}:${String(at(values, "image", "tag"))}`, "otel-collector-values")).toEqual([]);
      // The ConfigMap's endpoint is this release's Service, on its OTLP/HTTP port.
      const endpoint = new URL(String(configMaps.get("poseloop-common")?.["OTEL_EXPORTER_OTLP_ENDPOINT"]));
      expect(endpoint.hostname).toBe(values["fullnameOverride"]);
      expect(endpoint.port).toBe(String(at(config, "receivers", "otlp", "protocols", "http", "endpoint")).split(":").at(-1));
    });
  });

  describe("Kubernetes", () => {
    it("kustomization lists exactly the object files, and its images are the Deployments' images", () => {
      expect(kustomization["namespace"]).toBe(NAMESPACE);
      expect(asArray(kustomization["resources"]).map(String).sort()).toEqual(k8sObjectFiles.map((path) => relative(K8S, path)).sort());
      const images = [...deployments.values()].flatMap((d) => asArray(at(d, "spec", "template", "spec", "containers")).map((c) => String(at(c, "image"))));
      for (const entry of asArray(kustomization["images"])) {
        const name = String(at(entry, "name"));
        expect(images.map(repositoryOf), `kustomization image ${name}`).toContain(name);
        expect(images).toContain(`${name}:${String(at(entry, "newTag"))}`);
      }
    });

    it("every object has apiVersion, kind and a name, in the poseloop namespace, with the fields its kind requires", () => {
      const problems: string[] = [];
      for (const { file, object } of k8sObjects) {
        const kind = asString(object["kind"]) ?? "";
        const where = `${file} ${kind}/${nameOf(object)}`;
        if (API_VERSIONS[kind] === undefined) problems.push(`${where}: kind ${kind} is not one this test knows; add its checks`);
        else if (object["apiVersion"] !== API_VERSIONS[kind]) problems.push(`${where}: apiVersion ${String(object["apiVersion"])}, expected ${API_VERSIONS[kind]}`);
        if (nameOf(object) === "") problems.push(`${where}: metadata.name is missing`);
        if (kind !== "Namespace" && at(object, "metadata", "namespace") !== NAMESPACE) problems.push(`${where}: not in namespace ${NAMESPACE}`);
        if (kind === "ConfigMap") {
          for (const [key, value] of Object.entries(asObject(object["data"]))) {
            if (typeof value !== "string") problems.push(`${where}: data.${key} must be a string (quote it), not ${JSON.stringify(value)}`);
          }
        }
        if (kind === "Service") {
          const pods = [...deployments.values()].filter((d) => selects(at(object, "spec", "selector"), at(d, "spec", "template", "metadata", "labels")));
          if (pods.length !== 1) problems.push(`${where}: the selector matches ${pods.length} Deployments, expected 1`);
          for (const port of asArray(at(object, "spec", "ports"))) {
            const container = at(pods[0], "spec", "template", "spec", "containers", 0);
            if (containerPort(container, at(port, "targetPort")) === undefined) problems.push(`${where}: targetPort ${JSON.stringify(at(port, "targetPort"))} is no container port`);
          }
        }
        if (kind === "PersistentVolumeClaim") {
          if (asArray(at(object, "spec", "accessModes")).length === 0) problems.push(`${where}: spec.accessModes is missing`);
          if (asString(at(object, "spec", "resources", "requests", "storage")) === undefined) problems.push(`${where}: spec.resources.requests.storage is missing`);
          const claimed = [...deployments.values()].some((d) => asArray(at(d, "spec", "template", "spec", "volumes")).some((v) => at(v, "persistentVolumeClaim", "claimName") === nameOf(object)));
          if (!claimed) problems.push(`${where}: no Deployment mounts this claim`);
        }
        if (kind === "PodDisruptionBudget") {
          const target = deployments.get("inferencer");
          if (!selects(at(object, "spec", "selector", "matchLabels"), at(target, "spec", "template", "metadata", "labels"))) problems.push(`${where}: does not select the inferencer pods`);
        }
      }
      expect(ofKind("Namespace").map(nameOf)).toEqual([NAMESPACE]);
      expect(problems).toEqual([]);
    });

    it("Deployments: selectors match, containers are pinned, probed, locked down and use existing ConfigMaps", () => {
      const problems: string[] = [];
      const serviceAccounts = new Set(ofKind("ServiceAccount").map(nameOf));
      for (const [name, deployment] of deployments) {
        const where = `Deployment/${name}`;
        const pod = at(deployment, "spec", "template", "spec");
        if (!selects(at(deployment, "spec", "selector", "matchLabels"), at(deployment, "spec", "template", "metadata", "labels"))) {
          problems.push(`${where}: spec.selector does not match the template's labels`);
        }
        if (!serviceAccounts.has(String(at(pod, "serviceAccountName")))) problems.push(`${where}: serviceAccountName is not a ServiceAccount here`);
        if (at(pod, "securityContext", "runAsNonRoot") !== true) problems.push(`${where}: pod securityContext.runAsNonRoot must be true`);
        if (!(Number(at(pod, "securityContext", "runAsUser")) > 0)) problems.push(`${where}: pod securityContext.runAsUser must be a non-root uid`);
        const volumes = new Map(asArray(at(pod, "volumes")).map((volume) => [String(at(volume, "name")), volume]));
        const containers = asArray(at(pod, "containers"));
        if (containers.length === 0) problems.push(`${where}: no containers`);
        for (const container of containers) {
          const label = `${where} container ${String(at(container, "name"))}`;
          const image = asString(at(container, "image"));
          if (image === undefined) problems.push(`${label}: no image`);
          else problems.push(...imageProblems(image, label));
          const ports = asArray(at(container, "ports"));
          if (ports.length === 0 || ports.some((port) => typeof at(port, "containerPort") !== "number" || typeof at(port, "name") !== "string")) {
            problems.push(`${label}: needs named, numbered ports`);
          }
          for (const probe of ["readinessProbe", "livenessProbe"]) problems.push(...probePortProblems(container, at(container, probe), `${label} ${probe}`));
          if (at(container, "startupProbe") !== undefined) problems.push(...probePortProblems(container, at(container, "startupProbe"), `${label} startupProbe`));
          if (at(container, "securityContext", "allowPrivilegeEscalation") !== false) problems.push(`${label}: allowPrivilegeEscalation must be false`);
          if (!asArray(at(container, "securityContext", "capabilities", "drop")).includes("ALL")) problems.push(`${label}: must drop ALL capabilities`);
          if (at(container, "securityContext", "readOnlyRootFilesystem") !== true) problems.push(`${label}: readOnlyRootFilesystem must be true`);
          const tmp = asArray(at(container, "volumeMounts")).find((mount) => at(mount, "mountPath") === "/tmp");
          if (at(volumes.get(String(at(tmp, "name"))), "emptyDir") === undefined) problems.push(`${label}: /tmp must be an emptyDir (the root filesystem is read-only)`);
          for (const mount of asArray(at(container, "volumeMounts"))) {
            if (!volumes.has(String(at(mount, "name")))) problems.push(`${label}: mounts unknown volume ${String(at(mount, "name"))}`);
          }
          if (at(container, "resources", "requests", "cpu") === undefined || at(container, "resources", "limits", "memory") === undefined) {
            problems.push(`${label}: needs a CPU request and a memory limit`);
          }
        }
      }
      expect([...deployments.keys()].sort()).toEqual(SERVICES.map((service) => service.name).sort());
      expect(problems).toEqual([]);
    });

    for (const service of SERVICES) {
      it(`${service.name}: the ConfigMaps and env the pod gets are accepted by the real config loader; ports and grace period agree`, () => {
        const deployment = deployments.get(service.name);
        const pod = at(deployment, "spec", "template", "spec");
        const container = at(pod, "containers", 0);
        const { env, problems: envProblems } = containerEnv(container, service.name, `Deployment/${service.name}`);
        const { config, problems } = configProblems(service, env, `Deployment/${service.name}`);
        expect([...envProblems, ...problems]).toEqual([]);
        const port = config?.grpc.port ?? -1;
        expect(port).toBe(defaultPort(service));
        expect(containerPort(container, "grpc")).toBe(port);
        expect(at(container, "readinessProbe", "grpc", "port")).toBe(port);
        const k8sService = ofKind("Service").find((s) => nameOf(s) === service.name);
        expect(at(k8sService, "spec", "ports", 0, "port")).toBe(port);
        expect(env["OTEL_SERVICE_NAME"]).toBe(`poseloop-${service.name}`);
        // The kubelet waits for the preStop hook and the drain before it kills the pod.
        const preStop = asArray(at(container, "lifecycle", "preStop", "exec", "command")).map(String);
        const preStopMs = preStop[0] === "sleep" ? Number(preStop[1]) * 1000 : 0;
        expect(Number(at(pod, "terminationGracePeriodSeconds")) * 1000).toBeGreaterThan(preStopMs + (config?.grpc.drainTimeoutMs ?? Infinity));
      });
    }

    it("both services read their tokens from a Secret mounted where their ConfigMap says", () => {
      for (const service of SERVICES) {
        const container = at(deployments.get(service.name), "spec", "template", "spec", "containers", 0);
        const { env } = containerEnv(container, service.name, `Deployment/${service.name}`);
        const file = env[`POSELOOP_${service.name.toUpperCase()}_TOKENS_FILE`] ?? "";
        const mount = asArray(at(container, "volumeMounts")).find((m) => file.startsWith(`${String(at(m, "mountPath"))}/`));
        expect(mount, `Deployment/${service.name} mounts ${file}`).toBeDefined();
        const volume = asArray(at(deployments.get(service.name), "spec", "template", "spec", "volumes")).find((v) => at(v, "name") === at(mount, "name"));
        expect(at(volume, "secret", "secretName")).toBe(`poseloop-${service.name}-tokens`);
      }
    });

    it("NetworkPolicies close the namespace by default and open only the inferencer to everyone", () => {
      const policies = ofKind("NetworkPolicy");
      const open = (policy: unknown) => asArray(at(policy, "spec", "ingress")).some((rule) => at(rule, "from") === undefined);
      expect(policies.filter((p) => Object.keys(asObject(at(p, "spec", "podSelector"))).length === 0 && at(p, "spec", "ingress") === undefined)).toHaveLength(1);
      expect(policies.filter(open).map((p) => at(p, "spec", "podSelector", "matchLabels", "app.kubernetes.io/name"))).toEqual(["inferencer"]);
      const trainer = policies.find((p) => at(p, "spec", "podSelector", "matchLabels", "app.kubernetes.io/name") === "trainer");
      expect(asArray(at(trainer, "spec", "ingress", 0, "ports")).map((port) => at(port, "port"))).toEqual([defaultPort(TRAINER)]);
    });

    it("the trainer runs on GPU nodes with one GPU, probed over gRPC health, with time to checkpoint on shutdown", () => {
      const pod = at(deployments.get("trainer"), "spec", "template", "spec");
      const container = at(pod, "containers", 0);
      expect(at(pod, "nodeSelector", "nvidia.com/gpu.present")).toBe("true");
      expect(asArray(at(pod, "tolerations"))).toContainEqual(expect.objectContaining({ key: "nvidia.com/gpu", effect: "NoSchedule" }));
      expect(at(container, "resources", "limits", "nvidia.com/gpu")).toBe(1);
      expect(at(container, "livenessProbe", "grpc", "port")).toBe(defaultPort(TRAINER));
      expect(Number(at(pod, "terminationGracePeriodSeconds"))).toBeGreaterThanOrEqual(120);
      expect(at(deployments.get("trainer"), "spec", "strategy", "rollingUpdate", "maxSurge")).toBe(0);
    });

    it("the inferencer autoscales on CPU and a disruption budget keeps one serving, which drains can still satisfy", () => {
      const [hpa, ...moreHpas] = ofKind("HorizontalPodAutoscaler");
      expect(moreHpas).toEqual([]);
      expect(at(hpa, "spec", "scaleTargetRef")).toEqual({ apiVersion: "apps/v1", kind: "Deployment", name: "inferencer" });
      const cpu = asArray(at(hpa, "spec", "metrics")).find((metric) => at(metric, "type") === "Resource" && at(metric, "resource", "name") === "cpu");
      expect(at(cpu, "resource", "target", "type")).toBe("Utilization");
      const [min, max] = [Number(at(hpa, "spec", "minReplicas")), Number(at(hpa, "spec", "maxReplicas"))];
      expect(min).toBeGreaterThanOrEqual(2);
      expect(max).toBeGreaterThanOrEqual(min);
      const inferencer = deployments.get("inferencer");
      // The autoscaler owns the replica count; CPU utilization is relative to the request.
      expect(at(inferencer, "spec", "replicas")).toBeUndefined();
      expect(at(inferencer, "spec", "template", "spec", "containers", 0, "resources", "requests", "cpu")).toBeDefined();
      const [pdb] = ofKind("PodDisruptionBudget");
      expect(Number(at(pdb, "spec", "minAvailable"))).toBeLessThan(min);
    });

    it("NATS Helm values: JetStream on file storage with a PVC, a pinned 2.10 server, named as the ConfigMap expects", () => {
      const values = readYamlObject(join(K8S, "nats-values.yaml"));
      expect(at(values, "config", "jetstream", "enabled")).toBe(true);
      expect(at(values, "config", "jetstream", "fileStore", "enabled")).toBe(true);
      expect(at(values, "config", "jetstream", "fileStore", "pvc", "enabled")).toBe(true);
      expect(String(at(values, "config", "jetstream", "fileStore", "pvc", "size"))).toMatch(/^\d+(Mi|Gi|Ti)$/);
      const image = `${String(at(values, "container", "image", "repository"))}:${String(at(values, "container", "image", "tag"))}`;
      expect(imageProblems(image, "nats-values")).toEqual([]);
      expect(image).toMatch(/^nats:2\.10\./);
      for (const path of [["reloader", "image"], ["natsBox", "container", "image"]]) {
        const ref = `${String(at(values, ...path, "repository"))}:${String(at(values, ...path, "tag"))}`;
        expect(imageProblems(ref, `nats-values ${path.join(".")}`)).toEqual([]);
      }
      const url = new URL(String(configMaps.get("poseloop-common")?.["POSELOOP_NATS_URL"]));
      expect(url.hostname).toBe(values["fullnameOverride"]);
      expect(url.port).toBe("4222");
    });
  });

  describe("Grafana dashboard", () => {
    const dashboard = JSON.parse(readFileSync(join(DEPLOY, "grafana", "poseloop-dashboard.json"), "utf8")) as Json;
    const panels = asArray(dashboard["panels"]).filter((panel) => at(panel, "type") !== "row");
    const targets = panels.flatMap((panel) => asArray(at(panel, "targets")));
    const queries = targets.map((target) => String(at(target, "query")));

    it("queries a Tempo datasource chosen by a variable, and defines every variable it uses", () => {
      const variables = asArray(at(dashboard, "templating", "list"));
      expect(variables).toContainEqual(expect.objectContaining({ type: "datasource", name: "datasource", query: "tempo" }));
      const defined = new Set(variables.map((variable) => String(at(variable, "name"))));
      for (const panel of panels) expect(at(panel, "datasource"), String(at(panel, "title"))).toEqual({ type: "tempo", uid: "${datasource}" });
      for (const target of targets) {
        expect(at(target, "datasource")).toEqual({ type: "tempo", uid: "${datasource}" });
        expect(at(target, "queryType")).toBe("traceql");
        for (const [, name] of JSON.stringify(target).matchAll(/\$\{?(\w+)/g)) expect(defined, `variable $${name}`).toContain(name);
      }
      const ids = asArray(dashboard["panels"]).map((panel) => at(panel, "id"));
      expect(new Set(ids).size).toBe(ids.length);
    });

    it("uses only span names and attributes the services really emit", () => {
      const attributes = new Set(queries.flatMap((query) => [...query.matchAll(/\bspan\.(poseloop\.[\w.]+)/g)].map((match) => match[1] ?? "")));
      const spanNames = new Set(queries.flatMap((query) => [...query.matchAll(/\bname\s*=\s*"([^"]+)"/g)].map((match) => match[1] ?? "")));
      expect([...attributes].sort()).toEqual(expect.arrayContaining(["poseloop.model.version", "poseloop.training.job_id"]));
      expect([...spanNames].sort()).toEqual(["frame", "model.load", "registry.publish"]);
      for (const attribute of attributes) expect(shippedSource, `attribute ${attribute}`).toContain(`"${attribute}"`);
      for (const name of spanNames) {
        const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
        const created = new RegExp(`(?:startSpan|startActiveSpan)\\(\\s*"${escaped}"|withSpan\\([^;]*?"${escaped}"`);
        expect(created.test(shippedSource), `a span named "${name}" is created in libs/ or services/`).toBe(true);
      }
    });

    it("has the panels a PoseLoop operator looks for", () => {
      const find = (pattern: RegExp): string | undefined => queries.find((query) => pattern.test(query));
      // Traces by model version and training job.
      expect(find(/poseloop\.model\.version.*poseloop\.training\.job_id/)).toBeDefined();
      // Frame latency, from the frame spans' durations (TraceQL metrics).
      expect(find(/name = "frame".*\|\s*quantile_over_time\(duration/)).toBeDefined();
      // No frame rate from frame spans: sampled (POSELOOP_FRAME_TRACE_RATIO), they undercount. The serving
      // metrics dashboard counts every frame.
      expect(find(/name = "frame".*\|\s*(rate|count_over_time)\(\)/)).toBeUndefined();
      // Swap events.
      expect(find(/name = "model\.load"/)).toBeDefined();
      for (const target of targets) {
        const isMetrics = /\|\s*(rate|count_over_time|quantile_over_time|histogram_over_time)\(/.test(String(at(target, "query")));
        expect(at(target, "metricsQueryType"), String(at(target, "query"))).toBe(isMetrics ? "range" : undefined);
      }
    });

    it("is provisioned into the compose Grafana with its Tempo datasource, as are the metrics dashboards", () => {
      const provider = readYamlObject(join(DEPLOY, "grafana", "provisioning", "dashboards", "poseloop.yaml"));
      const path = String(at(provider, "providers", 0, "options", "path"));
      for (const file of readdirSync(join(DEPLOY, "grafana")).filter((name) => name.endsWith(".json"))) {
        expect(asArray(at(composeServices, "grafana", "volumes")).map(String)).toContain(`./grafana/${file}:${path}/${file}:ro`);
      }
      const datasources = readYamlObject(join(DEPLOY, "grafana", "provisioning", "datasources", "poseloop.yaml"));
      const tempo = asArray(datasources["datasources"]).find((source) => at(source, "type") === "tempo");
      expect(new URL(String(at(tempo, "url"))).hostname).toBe("tempo");
      expect(composeServices).toHaveProperty("tempo");
      expect(dirname(path)).toBe("/var/lib/grafana");
    });
  });

  describe("Grafana metrics dashboards", () => {
    /**
     * The OpenTelemetry instruments the two services agreed on (README, Metrics) and their kinds. The SDK's
     * Prometheus exporter (what Prometheus scrapes on /metrics) writes dots as underscores, adds `_total` to a
     * counter and `_bucket`, `_sum` and `_count` to a histogram's series, and no unit suffix.
     */
    const AGREED_METRICS: Readonly<Record<string, "counter" | "histogram" | "gauge">> = {
      "rpc.server.call.duration": "histogram",
      "poseloop.inferencer.frames": "counter",
      "poseloop.inferencer.frame.duration": "histogram",
      "poseloop.inferencer.batch.size": "histogram",
      "poseloop.inferencer.queue.depth": "gauge",
      "poseloop.inferencer.streams.active": "gauge",
      "poseloop.inferencer.model.swap.duration": "histogram",
      "poseloop.inferencer.model.load.failures": "counter",
      "poseloop.inferencer.model.serving": "gauge",
      "poseloop.trainer.loss": "gauge",
      "poseloop.trainer.lr": "gauge",
      "poseloop.trainer.grad_norm": "gauge",
      "poseloop.trainer.samples_per_second": "gauge",
      "poseloop.trainer.validation.ap": "gauge",
      "poseloop.trainer.steps": "counter",
      "poseloop.trainer.epoch.duration": "histogram",
      "poseloop.trainer.queue.length": "gauge",
      "poseloop.trainer.jobs": "gauge",
      "poseloop.trainer.job.transitions": "counter",
    };
    /** Prometheus series name → the instrument it comes from. */
    const seriesOf = new Map(
      Object.entries(AGREED_METRICS).flatMap(([name, kind]) => {
        const base = name.replace(/\./g, "_");
        const series = kind === "counter" ? [`${base}_total`] : kind === "histogram" ? [`${base}_bucket`, `${base}_sum`, `${base}_count`] : [base];
        return series.map((series): [string, string] => [series, name]);
      }),
    );
    const KEYWORDS = new Set(["by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless", "inf", "nan"]);

    /** The metric names a PromQL expression selects: what is left once strings, matchers, ranges, label lists, variables and function names are gone. */
    function promqlMetrics(expr: string): string[] {
      const bare = expr
        .replace(/"(?:[^"\\]|\\.)*"/g, '""')
        .replace(/\{[^}]*\}/g, "")
        .replace(/\[[^\]]*\]/g, "")
        .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, "")
        .replace(/\$\{?\w+(?::\w+)?\}?/g, "");
      return [...bare.matchAll(/\b([a-zA-Z_:][\w:]*)\b(?!\s*\()/g)].map((match) => match[1] ?? "").filter((word) => !KEYWORDS.has(word.toLowerCase()));
    }

    const dashboards = ["poseloop-serving-dashboard.json", "poseloop-training-dashboard.json"].map((file) => ({
      file,
      dashboard: JSON.parse(readFileSync(join(DEPLOY, "grafana", file), "utf8")) as Json,
    }));
    const panelsOf = (dashboard: Json): unknown[] => asArray(dashboard["panels"]).filter((panel) => at(panel, "type") !== "row");
    const exprsOf = (dashboard: Json): string[] => panelsOf(dashboard).flatMap((panel) => asArray(at(panel, "targets")).map((target) => String(at(target, "expr"))));
    /** `label_values(metric, label)` of the query variables. */
    const variableMetrics = (dashboard: Json): string[] =>
      asArray(at(dashboard, "templating", "list")).flatMap((variable) => [...JSON.stringify(at(variable, "query") ?? "").matchAll(/label_values\(\s*([\w:]+)\s*,/g)].map((match) => match[1] ?? ""));

    for (const { file, dashboard } of dashboards) {
      it(`${file}: queries a Prometheus datasource chosen by a variable, and defines every variable it uses`, () => {
        const variables = asArray(at(dashboard, "templating", "list"));
        expect(variables).toContainEqual(expect.objectContaining({ type: "datasource", name: "datasource", query: "prometheus" }));
        const defined = new Set(variables.map((variable) => String(at(variable, "name"))));
        const datasource = { type: "prometheus", uid: "${datasource}" };
        for (const panel of panelsOf(dashboard)) {
          const title = String(at(panel, "title"));
          expect(at(panel, "datasource"), title).toEqual(datasource);
          expect(asArray(at(panel, "targets")).length, title).toBeGreaterThan(0);
          for (const target of asArray(at(panel, "targets"))) expect(at(target, "datasource"), title).toEqual(datasource);
        }
        // Grafana's own variables ($__rate_interval, ${__url_time_range}) start with two underscores.
        for (const [, name] of JSON.stringify(dashboard).matchAll(/\$\{?(\w+)/g)) {
          if (!name?.startsWith("__")) expect(defined, `variable $${name}`).toContain(name);
        }
        const ids = asArray(dashboard["panels"]).map((panel) => at(panel, "id"));
        expect(new Set(ids).size).toBe(ids.length);
        expect(new Set(dashboards.map(({ dashboard: d }) => d["uid"])).size).toBe(dashboards.length);
      });
    }

    it("name only the agreed metrics, by their Prometheus names, each an instrument libs/ or services/ create", () => {
      const problems: string[] = [];
      for (const { file, dashboard } of dashboards) {
        for (const expr of [...exprsOf(dashboard), ...variableMetrics(dashboard)]) {
          const names = promqlMetrics(expr);
          if (names.length === 0) problems.push(`${file}: ${expr} selects no metric`);
          for (const name of names) if (!seriesOf.has(name)) problems.push(`${file}: ${expr} names ${name}, which is not an agreed metric's Prometheus name`);
        }
      }
      expect(problems).toEqual([]);
      // A renamed instrument leaves its dashboards' queries empty: the old name must still be created somewhere.
      for (const name of Object.keys(AGREED_METRICS)) expect(shippedSource, `instrument ${name}`).toContain(`"${name}"`);
    });

    it("show every agreed metric, and the panels serving and training people look for", () => {
      const [serving = {}, training = {}] = dashboards.map(({ dashboard }) => dashboard);
      const used = new Set(dashboards.flatMap(({ dashboard }) => exprsOf(dashboard).flatMap(promqlMetrics)).map((series) => seriesOf.get(series)));
      expect([...used].sort()).toEqual(Object.keys(AGREED_METRICS).sort());
      const finder = (dashboard: Json) => (pattern: RegExp): string | undefined => exprsOf(dashboard).find((expr) => pattern.test(expr));
      const inServing = finder(serving);
      // Frames per second from the counter of every frame, by outcome (dropped and errors apart).
      expect(inServing(/sum by \(outcome\) \(rate\(poseloop_inferencer_frames_total\b/)).toBeDefined();
      expect(inServing(/poseloop_inferencer_frames_total\{[^}]*outcome="dropped"/)).toBeDefined();
      // Frame latency p50/p95/p99 by stage, from the histogram's buckets.
      for (const q of ["0.5", "0.95", "0.99"]) expect(inServing(new RegExp(`histogram_quantile\\(${q}, sum by \\(le\\) \\(rate\\(poseloop_inferencer_frame_duration_bucket\\{stage=~"\\$stage"\\}`))).toBeDefined();
      const stages = asArray(at(serving, "templating", "list")).find((variable) => at(variable, "name") === "stage");
      expect(String(at(stages, "query")).split(",").sort()).toEqual(["decode", "detect", "pose", "post", "total"]);
      // RPC error rate: calls with a status other than OK over all calls.
      expect(inServing(/rpc_grpc_status_code!="0".*\/.*rpc_server_call_duration_count/)).toBeDefined();
      const inTraining = finder(training);
      expect(inTraining(/poseloop_trainer_validation_ap\{[^}]*precision=""/)).toBeDefined();
      expect(inTraining(/max by \(state\) \(poseloop_trainer_jobs\)/)).toBeDefined();
      // Latency panels ask for exemplars, which link a sample to its trace where the SDK records them.
      const latencyTargets = panelsOf(serving).flatMap((panel) => asArray(at(panel, "targets"))).filter((target) => /frame_duration_bucket/.test(String(at(target, "expr"))));
      expect(latencyTargets.every((target) => at(target, "exemplar") === true)).toBe(true);
    });

    it("Prometheus in compose scrapes both services' /metrics where they serve it, and Grafana has it as a datasource", () => {
      const config = readYamlObject(join(DEPLOY, "prometheus", "prometheus.yml"));
      const jobs = asArray(config["scrape_configs"]);
      for (const service of SERVICES) {
        const port = composeEnv(service.name)["POSELOOP_METRICS_PORT"];
        expect(port, `compose ${service.name} POSELOOP_METRICS_PORT`).toMatch(/^[1-9]\d*$/);
        const job = jobs.find((j) => at(j, "job_name") === composeEnv(service.name)["OTEL_SERVICE_NAME"]);
        expect(asArray(at(job, "static_configs", 0, "targets")), service.name).toEqual([`${service.name}:${port}`]);
        expect(at(job, "metrics_path")).toBe("/metrics");
        expect(composeServices).toHaveProperty(service.name);
      }
      const command = asArray(at(composeServices, "prometheus", "command")).map(String);
      const configPath = command.find((flag) => flag.startsWith("--config.file="))?.slice("--config.file=".length);
      expect(composeVolumes("prometheus")).toContainEqual({ source: "./prometheus/prometheus.yml", target: configPath });
      const datasources = asArray(readYamlObject(join(DEPLOY, "grafana", "provisioning", "datasources", "poseloop.yaml"))["datasources"]);
      const prometheus = datasources.find((source) => at(source, "type") === "prometheus");
      const url = new URL(String(at(prometheus, "url")));
      expect(composeServices).toHaveProperty(url.hostname);
      expect(asArray(at(composeServices, url.hostname, "ports")).map(String)).toContain(`127.0.0.1:${url.port}:${url.port}`);
      // Exemplars open their trace in the Tempo datasource.
      const tempo = datasources.find((source) => at(source, "type") === "tempo");
      expect(at(prometheus, "jsonData", "exemplarTraceIdDestinations", 0, "datasourceUid")).toBe(at(tempo, "uid"));
    });
  });
});

// ---------------------------------------------------------------------------------------------------------
// NATS with credentials: the real nats-server with the deployment's config, the real services' code paths

const execFileAsync = promisify(execFile);
const NATS_CONF = join(DEPLOY, "nats", "nats.conf");
const natsValues = readYamlObject(join(K8S, "nats-values.yaml"));

/** The Kubernetes Secrets that hold the NATS passwords, and the file of make-tokens.sh each is made from. */
const NATS_PASSWORD_SECRETS: Readonly<Record<string, string>> = {
  "poseloop-trainer-nats": "nats-trainer.password",
  "poseloop-inferencer-nats": "nats-inferencer.password",
  "poseloop-nats-admin": "nats-admin.password",
};

/** `config.merge` of the Helm values as chart 1.2.x renders it (nats.formatConfig): JSON, "<< x >>" unquoted. */
function renderHelmNatsConfig(storeDir: string): string {
  const config = { port: 4222, jetstream: { store_dir: storeDir }, ...asObject(at(natsValues, "config", "merge")) };
  return JSON.stringify(config, null, 2).replace(/"<<\s+(.*)\s+>>"/g, "$1");
}

/** The environment the chart gives nats-server: `container.env`, each Secret reference resolved from `secretsDir`. */
function helmNatsEnv(secretsDir: string): Record<string, string> {
  return Object.fromEntries(
    Object.entries(asObject(at(natsValues, "container", "env"))).map(([name, spec]) => {
      const secret = String(at(spec, "valueFrom", "secretKeyRef", "name"));
      const file = NATS_PASSWORD_SECRETS[secret];
      if (file === undefined || at(spec, "valueFrom", "secretKeyRef", "key") !== "password") throw new Error(`nats-values container.env ${name}: not a NATS password Secret`);
      return [name, readFileSync(join(secretsDir, file), "utf8").trim()];
    }),
  );
}

interface RunningNats {
  readonly url: string;
  readonly monitorUrl: string;
  stop(): Promise<void>;
}

/**
 * nats-server as the deployment starts it, from a config file, but on free ports (the flags override the
 * file's) and with only `env` for an environment. Fails with the server's output when it refuses the config.
 */
async function startNatsFromConfig(configPath: string, env: Record<string, string>): Promise<RunningNats> {
  const portsDir = await mkdtemp(join(tmpdir(), "poseloop-nats-ports-"));
  const child = spawn(findNatsServerBinary(), ["-c", configPath, "-a", "127.0.0.1", "-p", "-1", "-m", "-1", "--ports_file_dir", portsDir], {
    env: { PATH: process.env["PATH"] ?? "", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const collect = (chunk: Buffer): void => {
    output = (output + chunk.toString()).slice(-8192);
  };
  child.stdout.on("data", collect);
  child.stderr.on("data", collect);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    await exited;
  };
  try {
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`nats-server refused ${configPath} (exit ${child.exitCode}):\n${output}`);
      const file = readdirSync(portsDir).find((name) => name.endsWith(".ports"));
      const ports = file === undefined ? undefined : (JSON.parse(readFileSync(join(portsDir, file), "utf8") || "{}") as { nats?: string[]; monitoring?: string[] });
      const [url, monitorUrl] = [ports?.nats?.[0], ports?.monitoring?.[0]];
      if (url !== undefined && monitorUrl !== undefined) return { url, monitorUrl, stop };
      if (Date.now() > deadline) throw new Error(`nats-server did not listen within 10 s:\n${output}`);
      await sleep(25);
    }
  } catch (error) {
    await stop();
    throw error;
  } finally {
    await rm(portsDir, { recursive: true, force: true });
  }
}

/** An error's message and its causes' ("a <- b <- c"). */
function causes(error: unknown): string {
  const chain: string[] = [];
  for (let cause: unknown = error; cause instanceof Error; cause = cause.cause) chain.push(cause.message);
  return chain.join(" <- ");
}

/** A logger that keeps warnings and errors, to show why a service did not get somewhere. */
function recordingLogger(): Logger & { readonly problems: string[] } {
  const problems: string[] = [];
  const record = (msg: string, fields?: LogFields): void => void problems.push(fields?.["err"] === undefined ? msg : `${msg}: ${causes(fields["err"])}`);
  const logger: Logger & { readonly problems: string[] } = {
    problems,
    debug: () => undefined,
    info: () => undefined,
    warn: record,
    error: record,
    child: () => logger,
  };
  return logger;
}

/** Why `promise` failed, cause by cause ("" when it did not fail): to tell a refusal from any other failure. */
async function refusal(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return "";
  } catch (error) {
    return causes(error);
  }
}

const PERMISSION_VIOLATION = /Permissions Violation for Publish/;

describe("NATS credentials", () => {
  let secrets: { path: string; remove: () => Promise<void> };
  let written: string[];
  beforeAll(async () => {
    secrets = await makeTempDir("poseloop-deploy-secrets-");
    // Exactly as documented, into a folder of its own.
    await execFileAsync("sh", [join(DEPLOY, "secrets", "make-tokens.sh"), join(secrets.path, "deploy-secrets")], { timeout: 15_000 });
    written = readdirSync(join(secrets.path, "deploy-secrets")).sort();
  });
  afterAll(async () => secrets?.remove());
  const secretFile = (name: string): string => join(secrets.path, "deploy-secrets", name);

  /** The user and password file a compose service signs in to NATS with, the file taken from make-tokens.sh's output. */
  function composeNatsLogin(service: "trainer" | "inferencer"): { user: string; passwordFile: string } {
    const env = composeEnv(service);
    const secret = (env["POSELOOP_NATS_PASSWORD_FILE"] ?? "").replace(/^\/run\/secrets\//, "");
    expect(asArray(at(composeServices, service, "secrets")).map(String)).toContain(secret);
    const source = String(at(compose, "secrets", secret, "file"));
    expect(source).toMatch(/^\.\/secrets\/[\w.-]+$/);
    return { user: env["POSELOOP_NATS_USER"] ?? "", passwordFile: secretFile(basename(source)) };
  }

  it("make-tokens.sh writes every file compose mounts from deploy/secrets, all git-ignored, and keeps them on a second run", async () => {
    expect(written).toEqual(["inferencer.tokens", "nats-admin.password", "nats-auth.conf", "nats-inferencer.password", "nats-trainer.password", "trainer.tokens"]);
    const ignored = readFileSync(join(DEPLOY, "secrets", ".gitignore"), "utf8")
      .split("\n")
      .filter((line) => line.trim() !== "" && !line.startsWith("#"))
      .map((glob) => new RegExp(`^${glob.trim().replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, "[^/]*")}$`));
    for (const name of written) expect(ignored.some((pattern) => pattern.test(name)), `${name} is git-ignored`).toBe(true);
    const mounted = [
      ...Object.values(asObject(compose["secrets"])).map((secret) => String(at(secret, "file"))),
      ...Object.keys(composeServices).flatMap((service) => composeVolumes(service).map((volume) => volume.source)),
    ].filter(isGeneratedSecret);
    expect(mounted.length).toBeGreaterThanOrEqual(5);
    for (const source of mounted) expect(written, `compose mounts ${source}`).toContain(basename(source));

    const before = written.map((name) => readFileSync(secretFile(name), "utf8"));
    await execFileAsync("sh", [join(DEPLOY, "secrets", "make-tokens.sh"), join(secrets.path, "deploy-secrets")], { timeout: 15_000 });
    expect(written.map((name) => readFileSync(secretFile(name), "utf8"))).toEqual(before);
    // The passwords are random, one per user, and the config include carries the same ones.
    const passwords = ["trainer", "inferencer", "admin"].map((user) => readFileSync(secretFile(`nats-${user}.password`), "utf8").trim());
    expect(new Set(passwords).size).toBe(3);
    // A letter first: Kubernetes hands nats-server the passwords as environment variables, which it parses as
    // config values, and a hex string such as 7e01ab… is a malformed number there.
    for (const password of passwords) expect(password).toMatch(/^n[0-9a-f]{48}$/);
    const auth = readFileSync(secretFile("nats-auth.conf"), "utf8");
    for (const password of passwords) expect(auth).toContain(`"${password}"`);
  });

  it("make-tokens.sh refuses a password of your own that nats-server would read from the environment as no string", async () => {
    // 7e01ab stopped the Helm NATS server ("variable reference … could not be parsed"); a bare true is a boolean.
    for (const bad of ["7e01ab9c", "1e0", "-12ab", "true", "No"]) {
      const dir = join(secrets.path, `own-${bad}`);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, "nats-trainer.password"), `${bad}\n`);
      const run = await execFileAsync("sh", [join(DEPLOY, "secrets", "make-tokens.sh"), dir], { timeout: 15_000 }).then(
        () => ({ code: 0, stderr: "" }),
        (error: { code?: number; stderr?: string }) => ({ code: error.code ?? -1, stderr: error.stderr ?? "" }),
      );
      expect(run.code, bad).toBe(1);
      expect(run.stderr).toContain("nats-trainer.password: start it with a letter, and not a word nats-server reads as true or false");
      expect(existsSync(join(dir, "nats-auth.conf")), bad).toBe(false);
    }
  });

  it("compose mounts nats-auth.conf where nats.conf includes it, and the services sign in with their own users", () => {
    const natsConf = readFileSync(NATS_CONF, "utf8");
    const include = /^include\s+(\S+)\s*$/m.exec(natsConf)?.[1] ?? "";
    const command = asArray(at(composeServices, "nats", "command")).map(String);
    const configPath = command[command.indexOf("-c") + 1] ?? "";
    expect(composeVolumes("nats")).toContainEqual({ source: "./secrets/nats-auth.conf", target: join(dirname(configPath), include) });
    // Long syntax that does not create the file: without make-tokens.sh, compose stops instead of mounting a folder.
    const authMount = asArray(at(composeServices, "nats", "volumes")).find((volume) => at(volume, "source") === "./secrets/nats-auth.conf");
    expect(at(authMount, "read_only")).toBe(true);
    expect(at(authMount, "bind", "create_host_path")).toBe(false);
    expect(composeNatsLogin("trainer").user).toBe("trainer");
    expect(composeNatsLogin("inferencer").user).toBe("inferencer");
  });

  it("Kubernetes: each service signs in with its user and a password from its own Secret, which the NATS servers read too", () => {
    const serverSecrets = Object.values(asObject(at(natsValues, "container", "env"))).map((spec) => String(at(spec, "valueFrom", "secretKeyRef", "name")));
    expect(serverSecrets.sort()).toEqual(Object.keys(NATS_PASSWORD_SECRETS).sort());
    const readme = readFileSync(join(DEPLOY, "README.md"), "utf8");
    for (const [secret, file] of Object.entries(NATS_PASSWORD_SECRETS)) {
      expect(readme).toContain(`kubectl -n poseloop create secret generic ${secret} --from-file=password=deploy/secrets/${file}`);
    }
    for (const service of SERVICES) {
      const pod = at(deployments.get(service.name), "spec", "template", "spec");
      const container = at(pod, "containers", 0);
      const { env } = containerEnv(container, service.name, `Deployment/${service.name}`);
      expect(env["POSELOOP_NATS_USER"]).toBe(service.name);
      const file = env["POSELOOP_NATS_PASSWORD_FILE"] ?? "";
      const mount = asArray(at(container, "volumeMounts")).find((m) => file === `${String(at(m, "mountPath"))}/password`);
      expect(mount, `Deployment/${service.name} mounts ${file}`).toBeDefined();
      const volume = asArray(at(pod, "volumes")).find((v) => at(v, "name") === at(mount, "name"));
      expect(at(volume, "secret", "secretName")).toBe(`poseloop-${service.name}-nats`);
    }
    // nats-box's CLI signs in as admin.
    expect(at(natsValues, "natsBox", "container", "env", "NATS_USER")).toBe("admin");
    expect(at(natsValues, "natsBox", "container", "env", "NATS_PASSWORD", "valueFrom", "secretKeyRef", "name")).toBe("poseloop-nats-admin");
  });

  const flavours = [
    {
      name: "Compose: deploy/nats/nats.conf with the nats-auth.conf of make-tokens.sh",
      start: async (dir: string): Promise<RunningNats> => {
        // A copy beside the generated include, as compose mounts them; only the store moves off /data.
        const text = readFileSync(NATS_CONF, "utf8");
        expect(text.match(/^\s*store_dir:\s*\/data\s*$/gm)).toHaveLength(1);
        writeFileSync(secretFile("nats.conf"), text.replace(/store_dir:\s*\/data/, `store_dir: "${join(dir, "store")}"`));
        try {
          return await startNatsFromConfig(secretFile("nats.conf"), {});
        } finally {
          rmSync(secretFile("nats.conf"));
        }
      },
    },
    {
      name: "Kubernetes: the Helm values' config.merge, passwords from the environment",
      start: async (dir: string): Promise<RunningNats> => {
        writeFileSync(join(dir, "nats.conf"), renderHelmNatsConfig(join(dir, "store")));
        return startNatsFromConfig(join(dir, "nats.conf"), helmNatsEnv(join(secrets.path, "deploy-secrets")));
      },
    },
  ];

  for (const flavour of flavours) {
    describe(flavour.name, () => {
      const MODEL = "deploy-auth";
      let dir: { path: string; remove: () => Promise<void> };
      let nats: RunningNats;
      const open: { close: () => Promise<unknown> }[] = [];
      const connect = async (login: { user: string; passwordFile: string }): Promise<NatsBus> => {
        const bus = await NatsBus.connect({ servers: nats.url, security: login, timeoutMs: 5000, apiTimeoutMs: 3000 });
        open.push(bus);
        return bus;
      };
      beforeAll(async () => {
        dir = await makeTempDir("poseloop-deploy-nats-");
        nats = await flavour.start(dir.path);
      });
      afterAll(async () => {
        for (const resource of open.reverse()) await resource.close().catch(() => undefined);
        await nats?.stop();
        await dir?.remove();
      });

      it("refuses a client without credentials or with another user's password; the health check needs none", async () => {
        const anonymous = await connectNats({ servers: nats.url, timeoutMs: 5000 }).catch((error: unknown) => error);
        expect(AppError.is(anonymous, Code.UNAUTHENTICATED), String(anonymous)).toBe(true);
        const swapped = { user: "trainer", passwordFile: composeNatsLogin("inferencer").passwordFile };
        const wrong = await connectNats({ servers: nats.url, security: swapped, timeoutMs: 5000 }).catch((error: unknown) => error);
        expect(AppError.is(wrong, Code.UNAUTHENTICATED), String(wrong)).toBe(true);
        const health = await fetch(`${nats.monitorUrl}/healthz?js-enabled-only=true`);
        expect(health.status).toBe(200);
      });

      it("the inferencer starts on an empty bus, then loads the version the trainer's user publishes", async () => {
        const login = composeNatsLogin("inferencer");
        const logger = recordingLogger();
        const config = loadInferencerConfig({
          POSELOOP_NATS_URL: nats.url,
          POSELOOP_NATS_USER: login.user,
          POSELOOP_NATS_PASSWORD_FILE: login.passwordFile,
          POSELOOP_INFERENCER_LISTEN: "127.0.0.1:0",
          POSELOOP_MODEL: MODEL,
        });
        const inferencer = await startInferencer(config, logger);
        open.push({ close: () => inferencer.stop() });
        const registry = await ModelRegistry.open(await connect(composeNatsLogin("trainer")));
        const published = await publishTestModel(registry, MODEL, await buildTestModel({ int8: false }));
        const serving = await inferencer.models.waitForServing(15_000).catch((error: unknown) => {
          throw new Error(`the inferencer did not load the model: ${String(error)}; it logged ${JSON.stringify(logger.problems)}`);
        });
        expect(serving.ref.version).toBe(published.manifest.model?.version);
        expect(logger.problems).toEqual([]);
      });

      it("the trainer's user opens and uses the trainer's queues, buckets, checkpoints and job events", async () => {
        const login = composeNatsLogin("trainer");
        const logger = recordingLogger();
        const work = join(dir.path, "trainer");
        const trainer = await startTrainer(
          loadTrainerConfig({
            POSELOOP_NATS_URL: nats.url,
            POSELOOP_NATS_USER: login.user,
            POSELOOP_NATS_PASSWORD_FILE: login.passwordFile,
            POSELOOP_TRAINER_LISTEN: "127.0.0.1:0",
            POSELOOP_WORK_DIR: join(work, "work"),
            POSELOOP_DATA_ROOT: join(work, "data"),
            // No PyTorch engine: its probe fails at once, and onnxruntime's queue is the one consumed.
            POSELOOP_PYTHON: join(work, "no-python"),
          }),
          logger,
        );
        await trainer.probed;
        await sleep(300);
        await trainer.stop();
        expect(logger.problems.filter((problem) => /permission|authoriz/i.test(problem))).toEqual([]);

        // What the trainer does on the bus, one step each, on a bus of the trainer's user.
        const bus = await connect(login);
        const queue = await bus.jobQueue("poseloop-training");
        await queue.enqueue({ id: "deploy-auth-1", data: Buffer.from("job") });
        const delivery = await queue.next({ waitMs: 3000 });
        expect(delivery?.id).toBe("deploy-auth-1");
        await delivery?.ack();
        const jobs = await bus.keyValueStore("poseloop-jobs", { history: 1 });
        await jobs.put("deploy-auth-1", Buffer.from("record"));
        expect(Buffer.from((await jobs.get("deploy-auth-1"))?.value ?? []).toString()).toBe("record");
        const checkpoints = await bus.blobStore("poseloop-checkpoints");
        await checkpoints.put("deploy-auth-1/epoch-1", Buffer.from("weights"));
        const events = await bus.events();
        const stop = new AbortController();
        const heard = take(events.subscribe("poseloop.events.jobs.deploy-auth-1", stop.signal), 1);
        await sleep(50);
        await events.publish("poseloop.events.jobs.deploy-auth-1", Buffer.from("progress"));
        expect((await heard).map((message) => Buffer.from(message.data).toString())).toEqual(["progress"]);
        stop.abort();
      });

      it("the inferencer's user cannot enqueue training jobs, publish versions, set policies or read the jobs", async () => {
        const bus = await connect(composeNatsLogin("inferencer"));
        const trainerBus = await connect(composeNatsLogin("trainer"));
        const queue = await trainerBus.jobQueue("poseloop-training");
        const trainerRegistry = await ModelRegistry.open(trainerBus);
        const before = await trainerRegistry.getServing(MODEL);
        expect(before?.record.model?.version).toBeDefined();

        expect(await refusal(bus.jobQueue("poseloop-training"))).toMatch(PERMISSION_VIOLATION);
        // Not past the queue's API either: a publish on its subject is refused, and no job arrives.
        const events = await bus.events();
        expect(await refusal(events.publish("poseloop.queue.poseloop-training", Buffer.from("job")))).toMatch(PERMISSION_VIOLATION);
        expect(await queue.next({ waitMs: 500 })).toBeUndefined();

        // The registry: no new version and no policy. (The serving version it moves only by concluding a trial.)
        const registry = await ModelRegistry.open(bus);
        expect(await refusal(publishTestModel(registry, MODEL, await buildTestModel({ int8: false, seed: 2 })))).toMatch(PERMISSION_VIOLATION);
        expect(await refusal(registry.setPolicy(MODEL, { mode: PromotionMode.SHADOW }, { setBy: "inferencer" }))).toMatch(PERMISSION_VIOLATION);
        expect(await trainerRegistry.getPolicy(MODEL)).toBeUndefined();
        expect((await trainerRegistry.getServing(MODEL))?.revision).toBe(before?.revision);
        expect(await trainerRegistry.listVersions(MODEL)).toHaveLength(1);

        // The jobs, the checkpoints and the job events are the trainer's.
        expect(await refusal(bus.keyValueStore("poseloop-jobs", { history: 1 }))).toMatch(PERMISSION_VIOLATION);
        expect(await refusal(bus.blobStore("poseloop-checkpoints"))).toMatch(PERMISSION_VIOLATION);
        const stop = new AbortController();
        const heard = take(events.subscribe("poseloop.events.jobs.deploy-auth-2", stop.signal), 1).catch(() => []);
        await sleep(100);
        await (await trainerBus.events()).publish("poseloop.events.jobs.deploy-auth-2", Buffer.from("progress"));
        await sleep(200);
        stop.abort();
        expect(await heard).toEqual([]);
      });

      it("the inferencer's user reads the policy, watches a trial and concludes it: trial record, serving version, decision log and event", async () => {
        const registry = await ModelRegistry.open(await connect(composeNatsLogin("inferencer")));
        const trainerBus = await connect(composeNatsLogin("trainer"));
        const trainerRegistry = await ModelRegistry.open(trainerBus);
        const policy = await trainerRegistry.setPolicy(MODEL, { mode: PromotionMode.SHADOW, windowFrames: 10 }, { setBy: "deploy-test" });
        expect((await registry.getPolicy(MODEL))?.mode).toBe(PromotionMode.SHADOW);
        const candidate = await publishTestModel(trainerRegistry, MODEL, await buildTestModel({ int8: false, seed: 3 }), { promote: false });
        const version = candidate.manifest.model?.version;
        const stop = new AbortController();
        const watched = take(registry.watchCandidate(MODEL, stop.signal), 1);
        const announced = take(trainerRegistry.subscribeDecisions(MODEL, stop.signal), 2);
        await sleep(100);
        const trial = await trainerRegistry.startTrial(MODEL, candidate.manifest.model ?? {}, policy, { setBy: "deploy-test" });
        expect((await watched)[0]?.record.model?.version).toBe(version);
        expect((await registry.getCandidate(MODEL))?.revision).toBe(trial.revision);

        const decision = await registry.concludeTrial(MODEL, trial.revision, { verdict: PromotionVerdict.PROMOTED, reason: "agreed", decidedBy: "inferencer", agreement: { frames: 10n, meanOks: 0.99 } });
        expect(decision?.verdict).toBe(PromotionVerdict.PROMOTED);
        expect((await trainerRegistry.getServing(MODEL))?.record.model?.version).toBe(version);
        expect((await trainerRegistry.getCandidate(MODEL))?.record.model).toBeUndefined();
        expect((await trainerRegistry.decisions(MODEL)).at(-1)?.decidedBy).toBe("inferencer");
        expect((await announced).map((d) => PromotionVerdict[d.verdict])).toEqual(["TRIAL_STARTED", "PROMOTED"]);
        stop.abort();
      });
    });
  }
});
