import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { AppError, Code } from "@poseloop/core";

export interface ServiceProcess {
  readonly child: ChildProcess;
  /** The port from the service's "listening" log line. */
  readonly port: number;
  /** Every JSON log line so far. */
  readonly logs: Record<string, unknown>[];
  /** Sends `signal` (default SIGTERM) and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * Runs a service's TypeScript entry point as a real child process (node + tsx, sources through the
 * "@poseloop/source" condition) and waits for its "listening" log line.
 */
export async function spawnService(entry: string, env: Readonly<Record<string, string>>, timeoutMs = 30_000): Promise<ServiceProcess> {
  const child = spawn(process.execPath, ["--conditions=@poseloop/source", "--import", "tsx", entry], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: Record<string, unknown>[] = [];
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4000);
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new AppError(Code.DEADLINE_EXCEEDED, `${entry} did not listen within ${timeoutMs} ms:\n${stderr}`));
    }, timeoutMs);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new AppError(Code.FAILED_PRECONDITION, `${entry} exited with ${code} before listening:\n${JSON.stringify(logs.slice(-5))}\n${stderr}`));
    });
    const lines = createInterface({ input: child.stdout ?? process.stdin });
    lines.on("line", (line) => {
      let record: Record<string, unknown>;
      try {
        record = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      logs.push(record);
      if (record["msg"] === "listening" && typeof record["address"] === "string") {
        clearTimeout(timer);
        resolve(Number(record["address"].split(":").at(-1)));
      }
    });
  });
  return {
    child,
    port,
    logs,
    stop: async (signal = "SIGTERM") => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}
