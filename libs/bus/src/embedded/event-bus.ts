import { appendFile, mkdir, open, stat } from "node:fs/promises";
import { join } from "node:path";
import { subjectMatches } from "../names.js";
import type { BusMessage, EventBus } from "../types.js";
import { watchDirectory } from "./fs-util.js";

interface LoggedEvent {
  subject: string;
  headers: Record<string, string>;
  data: string;
}

/**
 * Events in an append-only log file (one JSON line per event, appended in a single write), tailed by every
 * subscriber from the moment it subscribes: publishers and subscribers may be different processes.
 */
export class FsEventBus implements EventBus {
  readonly #dir: string;
  readonly #log: string;

  constructor(dir: string) {
    this.#dir = dir;
    this.#log = join(dir, "events.log");
  }

  async publish(subject: string, data: Uint8Array, headers: Readonly<Record<string, string>> = {}): Promise<void> {
    await mkdir(this.#dir, { recursive: true });
    const line: LoggedEvent = { subject, headers: { ...headers }, data: Buffer.from(data).toString("base64") };
    await appendFile(this.#log, `${JSON.stringify(line)}\n`, { flag: "a" });
  }

  async *subscribe(pattern: string, signal: AbortSignal): AsyncGenerator<BusMessage> {
    await mkdir(this.#dir, { recursive: true });
    let offset = (await stat(this.#log).catch(() => undefined))?.size ?? 0;
    let partial = "";
    for await (const _tick of watchDirectory(this.#dir, signal, 100)) {
      const size = (await stat(this.#log).catch(() => undefined))?.size ?? 0;
      if (size <= offset) continue;
      const handle = await open(this.#log, "r");
      let text: string;
      try {
        const buffer = Buffer.alloc(size - offset);
        await handle.read(buffer, 0, buffer.length, offset);
        text = partial + buffer.toString("utf8");
      } finally {
        await handle.close();
      }
      offset = size;
      const lines = text.split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) {
        if (line.length === 0) continue;
        const event = JSON.parse(line) as LoggedEvent;
        if (!subjectMatches(pattern, event.subject)) continue;
        if (signal.aborted) return;
        yield { subject: event.subject, headers: event.headers, data: Buffer.from(event.data, "base64") };
      }
    }
  }
}
