import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Bus, KeyValueStore } from "@poseloop/bus";
import type { Env } from "@poseloop/core";
import { Device, TrainingEngine, type TrainConfig } from "@poseloop/proto/poseloop/trainer/v1/config_pb";
import { EngineCapabilitySchema, TrainerInfoSchema, type TrainerInfo } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import * as ort from "onnxruntime-node";
import { probeTorch, type ProbeOptions } from "./python.js";

/** What one engine of a trainer can run. */
export interface EngineCapability {
  readonly name: "onnxruntime" | "pytorch";
  readonly available: boolean;
  /** Why not, when unavailable. */
  readonly reason?: string;
  readonly version: string;
  /** "cpu", "cuda" / "cuda:0".."cuda:N-1", "webgpu". */
  readonly devices: readonly string[];
  readonly gpuCount: number;
  readonly bf16: boolean;
  readonly nccl: boolean;
  readonly gloo: boolean;
  /** pytorch: the interpreter that runs the engine (the one whose probe succeeded). */
  readonly python?: string;
}

/** What a trainer process can run, probed once at its start. */
export interface TrainerCapabilities {
  readonly workerId: string;
  readonly engines: readonly EngineCapability[];
}

/**
 * Where a job may run: its engine and device kind. Each class has its own queue, so a trainer consumes only
 * the jobs it can run (NATS 2.9 has no consumers filtering on several subjects, so the class is the queue).
 */
export const PLACEMENTS = ["onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-webgpu", "pytorch-cpu", "pytorch-cuda"] as const;
export type Placement = (typeof PLACEMENTS)[number];

/**
 * Queue name suffixes of the classes. onnxruntime-cpu keeps the one queue of trainers before placement, so
 * jobs queued by them still run; onnxruntime is "ort" in the others because queue names stop at 32 characters.
 */
const QUEUE_SUFFIXES: Readonly<Record<Placement, string>> = {
  "onnxruntime-cpu": "",
  "onnxruntime-cuda": "-ort-cuda",
  "onnxruntime-webgpu": "-ort-webgpu",
  "pytorch-cpu": "-pytorch-cpu",
  "pytorch-cuda": "-pytorch-cuda",
};

export function queueNameOf(base: string, placement: Placement): string {
  return `${base}${QUEUE_SUFFIXES[placement]}`;
}

export function engineNameOf(config: TrainConfig): "onnxruntime" | "pytorch" {
  return config.engine === TrainingEngine.PYTORCH ? "pytorch" : "onnxruntime";
}

/** "cpu", "cuda", "cuda:2", "webgpu": the device as TRAIN.DEVICE spells it. */
export function deviceNameOf(config: TrainConfig): string {
  switch (config.device) {
    case Device.CUDA:
      return config.deviceIndex === 0 ? "cuda" : `cuda:${config.deviceIndex}`;
    case Device.WEBGPU:
      return "webgpu";
    default:
      return "cpu";
  }
}

export function placementOf(config: TrainConfig): Placement {
  const kind = config.device === Device.CUDA ? "cuda" : config.device === Device.WEBGPU ? "webgpu" : "cpu";
  // pytorch-webgpu is refused by validation; were one to get here, no trainer advertises it.
  return `${engineNameOf(config)}-${kind}` as Placement;
}

/** The classes whose jobs a trainer with these capabilities can take. */
export function placementsOf(capabilities: TrainerCapabilities): Placement[] {
  const placements: Placement[] = [];
  for (const engine of capabilities.engines) {
    if (!engine.available) continue;
    if (engine.name === "onnxruntime") {
      for (const device of ["cpu", "cuda", "webgpu"] as const) if (engine.devices.includes(device)) placements.push(`onnxruntime-${device}`);
    } else {
      placements.push("pytorch-cpu");
      if (engine.gpuCount > 0) placements.push("pytorch-cuda");
    }
  }
  return placements;
}

/**
 * Whether a trainer with `capabilities` can run `config`, and if not why, naming the engine, the device and the
 * trainer: "engine pytorch cannot use cuda on trainer t1: torch.cuda.is_available() is false".
 */
export function canRun(capabilities: TrainerCapabilities, config: TrainConfig): { ok: true } | { ok: false; reason: string } {
  const engineName = engineNameOf(config);
  const device = deviceNameOf(config);
  const refuse = (why: string) => ({ ok: false as const, reason: `engine ${engineName} cannot use ${device} on trainer ${capabilities.workerId}: ${why}` });
  const engine = capabilities.engines.find((e) => e.name === engineName);
  if (engine === undefined) return refuse(`the trainer has no ${engineName} engine`);
  if (!engine.available) return refuse(engine.reason ?? `${engineName} is not available`);
  if (engineName === "onnxruntime") {
    const kind = config.device === Device.CUDA ? "cuda" : config.device === Device.WEBGPU ? "webgpu" : "cpu";
    if (!engine.devices.includes(kind)) return refuse(`onnxruntime-node ${engine.version} has no ${kind} execution provider here (it has ${engine.devices.join(", ")})`);
    return { ok: true };
  }
  if (config.device === Device.WEBGPU) return refuse("torch has no WebGPU device");
  if (config.device === Device.CUDA) {
    if (engine.gpuCount === 0) return refuse("torch.cuda.is_available() is false");
    if (config.deviceIndex >= engine.gpuCount) return refuse(`it has ${engine.gpuCount} GPU${engine.gpuCount === 1 ? "" : "s"} (cuda:0 to cuda:${engine.gpuCount - 1})`);
    const gpus = Math.max(1, config.gpus);
    if (gpus > 1 && config.deviceIndex + gpus > engine.gpuCount) return refuse(`TRAIN.GPUS ${gpus} from cuda:${config.deviceIndex} needs ${config.deviceIndex + gpus} GPUs, it has ${engine.gpuCount}`);
    if ((gpus > 1 || config.nodes > 1) && !engine.nccl) return refuse("torch.distributed has no NCCL backend for multi-GPU training");
  } else {
    if (config.mixedPrecision && !engine.bf16) return refuse("TRAIN.AMP on the CPU needs bfloat16 autocast, which this torch lacks");
    if ((config.gpus > 1 || config.nodes > 1) && !engine.gloo) return refuse("torch.distributed has no gloo backend for multi-process CPU training");
  }
  return { ok: true };
}

/** What this process's onnxruntime-node can train on: the CPU and every execution provider it bundles. */
export function onnxruntimeCapability(): EngineCapability {
  const backends = ort.listSupportedBackends?.() ?? [{ name: "cpu", bundled: true }];
  const devices = backends.filter((backend) => backend.name === "cpu" || backend.bundled).map((backend) => backend.name);
  const versions = (ort.env as { versions?: { node?: string } }).versions;
  return { name: "onnxruntime", available: true, version: versions?.node ?? "", devices, gpuCount: 0, bf16: false, nccl: false, gloo: false };
}

/** The pytorch engine's capability from a probe of `python -m poseloop_torch --probe`. */
export async function pytorchCapability(env: Env, options: ProbeOptions = {}): Promise<EngineCapability> {
  const probe = await probeTorch(env, options);
  if (!probe.ok) return { name: "pytorch", available: false, reason: probe.reason, version: "", devices: [], gpuCount: 0, bf16: false, nccl: false, gloo: false };
  const { hello, python } = probe;
  const gpus = hello.cuda?.available === true ? hello.cuda.devices.length : 0;
  return {
    name: "pytorch",
    available: true,
    version: hello.torch ?? "",
    devices: ["cpu", ...Array.from({ length: gpus }, (_, i) => `cuda:${i}`)],
    gpuCount: gpus,
    bf16: hello.bf16 === true,
    nccl: hello.distributed?.nccl === true,
    gloo: hello.distributed?.gloo === true,
    python,
  };
}

export async function probeCapabilities(workerId: string, env: Env, options: ProbeOptions = {}): Promise<TrainerCapabilities> {
  return { workerId, engines: [onnxruntimeCapability(), await pytorchCapability(env, options)] };
}

/** One line for the startup log: "onnxruntime 1.30.0 [cpu, webgpu]; pytorch 1.13.0 [cpu] bf16 gloo". */
export function describeCapabilities(capabilities: TrainerCapabilities): string {
  return capabilities.engines
    .map((engine) => {
      if (!engine.available) return `${engine.name} unavailable (${engine.reason ?? "no reason given"})`;
      const extras = [engine.bf16 ? "bf16" : "", engine.gloo ? "gloo" : "", engine.nccl ? "nccl" : ""].filter((x) => x !== "");
      return `${engine.name} ${engine.version} [${engine.devices.join(", ")}]${extras.length === 0 ? "" : ` ${extras.join(" ")}`}`;
    })
    .join("; ");
}

export function toTrainerInfo(capabilities: TrainerCapabilities, maxConcurrentJobs: number, updatedAt: Date = new Date()): TrainerInfo {
  return create(TrainerInfoSchema, {
    workerId: capabilities.workerId,
    maxConcurrentJobs,
    placements: maxConcurrentJobs === 0 ? [] : placementsOf(capabilities),
    updatedAt: timestampFromDate(updatedAt),
    engines: capabilities.engines.map((engine) =>
      create(EngineCapabilitySchema, {
        name: engine.name,
        available: engine.available,
        reason: engine.reason ?? "",
        version: engine.version,
        devices: [...engine.devices],
        gpuCount: engine.gpuCount,
        bf16: engine.bf16,
        nccl: engine.nccl,
        gloo: engine.gloo,
        python: engine.python ?? "",
      }),
    ),
  });
}

export function fromTrainerInfo(info: TrainerInfo): TrainerCapabilities {
  return {
    workerId: info.workerId,
    engines: info.engines.map((engine) => ({
      name: engine.name === "pytorch" ? "pytorch" : "onnxruntime",
      available: engine.available,
      ...(engine.reason === "" ? {} : { reason: engine.reason }),
      version: engine.version,
      devices: [...engine.devices],
      gpuCount: engine.gpuCount,
      bf16: engine.bf16,
      nccl: engine.nccl,
      gloo: engine.gloo,
      ...(engine.python === "" ? {} : { python: engine.python }),
    })),
  };
}

export const TRAINERS_BUCKET = "poseloop-trainers";
/** How often a trainer refreshes its advertisement; one missing three refreshes is taken for gone. */
export const ADVERTISE_EVERY_MS = 10_000;
export const ADVERTISEMENT_TTL_MS = 3 * ADVERTISE_EVERY_MS;

/**
 * The trainers of a bus and what they can run: each live trainer's TrainerInfo under its worker id, rewritten
 * every ADVERTISE_EVERY_MS. The bucket keeps no TTL of its own (the embedded bus has none); readers skip
 * entries older than ADVERTISEMENT_TTL_MS, so a trainer that died without withdrawing drops out by itself.
 */
export class TrainerDirectory {
  readonly #kv: KeyValueStore;
  readonly #ttlMs: number;

  private constructor(kv: KeyValueStore, ttlMs: number) {
    this.#kv = kv;
    this.#ttlMs = ttlMs;
  }

  static async open(bus: Bus, options: { ttlMs?: number } = {}): Promise<TrainerDirectory> {
    return new TrainerDirectory(await bus.keyValueStore(TRAINERS_BUCKET, { history: 1 }), options.ttlMs ?? ADVERTISEMENT_TTL_MS);
  }

  async advertise(info: TrainerInfo): Promise<void> {
    await this.#kv.put(info.workerId, toBinary(TrainerInfoSchema, info));
  }

  /** Marks the trainer gone at once (a stopping trainer), by an advertisement that is already stale. */
  async withdraw(info: TrainerInfo): Promise<void> {
    await this.advertise({ ...info, updatedAt: timestampFromDate(new Date(0)) });
  }

  /** Every trainer whose advertisement is fresh, by worker id. */
  async live(now: Date = new Date()): Promise<TrainerInfo[]> {
    const keys = await this.#kv.keys();
    const entries = await Promise.all(keys.map((key) => this.#kv.get(key)));
    const live: TrainerInfo[] = [];
    for (const entry of entries) {
      if (entry === undefined || entry.value.length === 0) continue;
      let info: TrainerInfo;
      try {
        info = fromBinary(TrainerInfoSchema, entry.value);
      } catch {
        continue; // Written by something else; not a trainer's advertisement.
      }
      if (info.updatedAt === undefined || now.getTime() - timestampDate(info.updatedAt).getTime() > this.#ttlMs) continue;
      live.push(info);
    }
    return live.sort((a, b) => a.workerId.localeCompare(b.workerId));
  }
}

/**
 * Why no live trainer can run `config`, or undefined when one can. Trainers that take no jobs do not count.
 * "no trainer can run engine pytorch on cuda: t1: torch.cuda.is_available() is false; t2: ...".
 */
export function fleetRefusal(trainers: readonly TrainerInfo[], config: TrainConfig): string | undefined {
  const workers = trainers.filter((info) => info.maxConcurrentJobs > 0);
  const head = `no trainer can run engine ${engineNameOf(config)} on ${deviceNameOf(config)}`;
  if (workers.length === 0) return `${head}: no live trainer takes jobs`;
  const reasons: string[] = [];
  for (const info of workers) {
    const verdict = canRun(fromTrainerInfo(info), config);
    if (verdict.ok) return undefined;
    // The per-trainer reason without its own "engine X cannot use Y on trainer Z: " prefix, which the head says.
    reasons.push(`${info.workerId}: ${verdict.reason.replace(/^engine \S+ cannot use \S+ on trainer \S+: /, "")}`);
  }
  return `${head}: ${reasons.join("; ")}`;
}
