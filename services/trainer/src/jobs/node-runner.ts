import { spawn } from "node:child_process";
import type { JobDelivery, JobQueue } from "@poseloop/bus";
import type { Logger } from "@poseloop/core";
import { JobState } from "@poseloop/proto/poseloop/trainer/v1/trainer_pb";
import { engineEnv } from "../engines/python.js";
import { torchrunCommand, type NodeLaunch } from "../engines/torch-engine.js";
import { isTerminal, type JobStore } from "./job-store.js";

/**
 * A node other than node 0 of a multi-node job (TRAIN.NODES > 1): the trainer that runs the job (node 0, whose
 * rank 0 speaks to the trainer) queues one of these per other node for the attempt it runs.
 */
export interface NodeTask {
  readonly jobId: string;
  /** The job's attempt this node belongs to: a later attempt has its own rendezvous and its own nodes. */
  readonly attempt: number;
  readonly launch: Omit<NodeLaunch, "python" | "torchrun">;
}

/** Where the node tasks of a device kind wait: only trainers that can run that kind take them. */
export function nodeQueueName(base: string, kind: "cpu" | "cuda"): string {
  return `${base}-nodes-${kind}`;
}

export interface NodeRunnerDependencies {
  readonly store: JobStore;
  readonly logger: Logger;
  readonly env: Readonly<Record<string, string | undefined>>;
  /** The interpreter with torch (the trainer's probe found it). */
  readonly python: () => Promise<string | undefined>;
  /** How often the job's record is checked while the node runs. */
  readonly pollMs?: number;
}

/**
 * Runs one node task: torchrun for this node's processes, until they exit. They end with the job (node 0's
 * processes shut the group down) or fail with it (a peer gone breaks every collective); the node is stopped at
 * once when the job ends or moves to another attempt, so no process outlives the work it was part of. Nothing
 * of the job's state lives here: every tensor comes from node 0 and goes back to it.
 */
export async function runNodeTask(delivery: JobDelivery, deps: NodeRunnerDependencies, signal: AbortSignal): Promise<void> {
  const { store, logger } = deps;
  let task: NodeTask;
  try {
    task = JSON.parse(new TextDecoder().decode(delivery.data)) as NodeTask;
  } catch (error) {
    logger.error("dropping an unreadable node task", { err: error, delivery: delivery.id });
    await delivery.term();
    return;
  }
  const current = (await store.get(task.jobId))?.job;
  if (current === undefined || isTerminal(current.state) || current.attempt !== task.attempt) {
    // Its attempt is over (or never ran): a node started now would wait for a rendezvous no one else joins.
    await delivery.ack();
    return;
  }
  const python = await deps.python();
  if (python === undefined) {
    // Queued only where the PyTorch engine runs; a trainer whose probe failed hands it back for another.
    await delivery.nak(1000);
    return;
  }
  // Acked at once: a node is part of one attempt, and a node that dies fails that attempt (node 0's collectives
  // break), whose retry queues nodes of its own. Redelivering this one would only join a finished rendezvous.
  await delivery.ack();
  const { command, args } = torchrunCommand({ ...task.launch, python });
  logger.info("running a node of a multi-node job", { job_id: task.jobId, attempt: task.attempt, node_rank: task.launch.nodeRank, nodes: task.launch.nodes, rdzv_endpoint: task.launch.rdzvEndpoint });
  const child = spawn(command, args, { env: { ...engineEnv(deps.env), PYTHONUNBUFFERED: "1" }, stdio: ["ignore", "ignore", "pipe"], detached: true });
  let tail: string[] = [];
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    tail = [...tail, ...chunk.split("\n").filter((line) => line.trim() !== "")].slice(-20);
  });
  const stop = (): void => {
    try {
      // The whole group: torchrun's agent and the workers it started.
      if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  };
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once("close", (code, sig) => resolve({ code, signal: sig }));
    child.once("error", (error) => {
      logger.error("a node of a multi-node job could not start", { err: error, job_id: task.jobId });
      resolve({ code: -1, signal: null });
    });
  });
  const watching = setInterval(() => {
    void store
      .get(task.jobId)
      .then((record) => {
        const job = record?.job;
        if (job === undefined || isTerminal(job.state) || job.attempt !== task.attempt || job.state === JobState.QUEUED) stop();
      })
      .catch(() => undefined);
  }, deps.pollMs ?? 1000);
  const onAbort = (): void => stop();
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    const { code, signal: killedBy } = await exited;
    const fields = { job_id: task.jobId, node_rank: task.launch.nodeRank, exit_code: code, signal: killedBy, stderr: tail.join("\n") };
    if (code === 0) logger.info("a node of a multi-node job finished", fields);
    else logger.warn("a node of a multi-node job stopped", fields);
  } finally {
    clearInterval(watching);
    signal.removeEventListener("abort", onAbort);
  }
}

/** Queues the other nodes of an attempt of a multi-node job. */
export async function queueNodeTasks(queue: Pick<JobQueue, "enqueue">, jobId: string, attempt: number, launch: Omit<NodeLaunch, "python" | "torchrun" | "nodeRank">): Promise<void> {
  for (let nodeRank = 1; nodeRank < launch.nodes; nodeRank++) {
    const task: NodeTask = { jobId, attempt, launch: { ...launch, nodeRank } };
    await queue.enqueue({ id: `${jobId}-a${attempt}-n${nodeRank}`, data: new TextEncoder().encode(JSON.stringify(task)), dedupId: `${jobId}-a${attempt}-n${nodeRank}` });
  }
}
