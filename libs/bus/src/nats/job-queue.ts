import { headers as natsHeaders, nanos, type NatsConnection } from "@nats-io/nats-core";
import {
  AckPolicy,
  DeliverPolicy,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type Consumer,
  type JetStreamClient,
  type JetStreamOptions,
  type JsMsg,
} from "@nats-io/jetstream";
import { AppError, Code } from "@poseloop/core";
import { DEFAULT_MAX_DELIVERIES, type JobDelivery, type JobQueue } from "../types.js";
import { headersToRecord } from "./event-bus.js";
import { fromNatsError } from "./errors.js";

const JOB_ID_HEADER = "Poseloop-Job-Id";

/**
 * A JobQueue on a JetStream work-queue stream ("POSELOOP_QUEUE_<NAME>", subject "poseloop.queue.<name>")
 * with one durable pull consumer shared by every worker: each message goes to one worker, and comes back to
 * another when its ack wait passes without ack or heartbeat.
 */
export class NatsJobQueue implements JobQueue {
  readonly ackWaitMs: number;
  readonly maxDeliveries: number;
  readonly #js: JetStreamClient;
  readonly #consumer: Consumer;
  readonly #subject: string;

  private constructor(js: JetStreamClient, consumer: Consumer, subject: string, ackWaitMs: number, maxDeliveries: number) {
    this.#js = js;
    this.#consumer = consumer;
    this.#subject = subject;
    this.ackWaitMs = ackWaitMs;
    this.maxDeliveries = maxDeliveries;
  }

  static async open(
    connection: NatsConnection,
    name: string,
    // The trainer's default too (POSELOOP_JOB_ACK_WAIT): a dead consumer's job comes back within seconds.
    ackWaitMs = 6_000,
    jsOptions: JetStreamOptions = {},
    maxDeliveries = DEFAULT_MAX_DELIVERIES,
  ): Promise<NatsJobQueue> {
    if (!/^[a-z0-9_-]{1,32}$/.test(name)) throw new AppError(Code.INVALID_ARGUMENT, `invalid queue name ${JSON.stringify(name)}`);
    if (!Number.isInteger(maxDeliveries) || maxDeliveries < 1) throw new AppError(Code.INVALID_ARGUMENT, `maxDeliveries must be a positive integer, not ${maxDeliveries}`);
    const stream = `POSELOOP_QUEUE_${name.toUpperCase().replaceAll("-", "_")}`;
    const subject = `poseloop.queue.${name}`;
    try {
      const jsm = await jetstreamManager(connection, jsOptions);
      const existing = await jsm.streams.info(stream).catch(() => undefined);
      if (existing === undefined) {
        await jsm.streams.add({
          name: stream,
          subjects: [subject],
          retention: RetentionPolicy.Workqueue,
          storage: StorageType.File,
          duplicate_window: nanos(10 * 60_000),
        });
      }
      const consumerConfig = {
        durable_name: "workers",
        ack_policy: AckPolicy.Explicit,
        ack_wait: nanos(ackWaitMs),
        deliver_policy: DeliverPolicy.All,
        max_deliver: maxDeliveries,
      };
      const current = await jsm.consumers.info(stream, "workers").catch(() => undefined);
      if (current === undefined) await jsm.consumers.add(stream, consumerConfig);
      else if (current.config.ack_wait !== consumerConfig.ack_wait || current.config.max_deliver !== consumerConfig.max_deliver) {
        // A consumer created by an older trainer had no delivery limit (-1): it gets this one's.
        await jsm.consumers.update(stream, "workers", { ack_wait: consumerConfig.ack_wait, max_deliver: consumerConfig.max_deliver });
      }
      const js = jetstream(connection, jsOptions);
      return new NatsJobQueue(js, await js.consumers.get(stream, "workers"), subject, ackWaitMs, maxDeliveries);
    } catch (error) {
      throw fromNatsError(error, `open job queue ${name}`);
    }
  }

  async enqueue(job: { id: string; data: Uint8Array; headers?: Readonly<Record<string, string>>; dedupId?: string }): Promise<void> {
    const hdrs = natsHeaders();
    for (const [key, value] of Object.entries(job.headers ?? {})) hdrs.set(key, value);
    hdrs.set(JOB_ID_HEADER, job.id);
    try {
      await this.#js.publish(this.#subject, job.data, { headers: hdrs, msgID: job.dedupId ?? job.id });
    } catch (error) {
      throw fromNatsError(error, `enqueue job ${job.id}`);
    }
  }

  async next(options: { waitMs: number; signal?: AbortSignal }): Promise<JobDelivery | undefined> {
    if (options.signal?.aborted === true) return undefined;
    let message: JsMsg | null;
    try {
      // The server needs at least 1 s of expiry for a pull request.
      message = await this.#consumer.next({ expires: Math.max(1_000, options.waitMs) });
    } catch (error) {
      throw fromNatsError(error, "take the next job");
    }
    return message === null ? undefined : toDelivery(message);
  }
}

function toDelivery(message: JsMsg): JobDelivery {
  const headers = headersToRecord(message.headers);
  const { [JOB_ID_HEADER]: id = "", ...rest } = headers;
  return {
    id,
    data: message.data,
    headers: rest,
    deliveryCount: message.info.deliveryCount,
    ack: async () => {
      if (!(await message.ackAck())) throw new AppError(Code.UNAVAILABLE, `ack of job ${id} was not confirmed`);
    },
    nak: async (delayMs) => message.nak(delayMs),
    heartbeat: async () => message.working(),
    term: async () => message.term(),
  };
}
