import { headers as natsHeaders, type MsgHdrs, type NatsConnection } from "@nats-io/nats-core";
import { jetstream, jetstreamManager, RetentionPolicy, StorageType, type JetStreamClient, type JetStreamOptions } from "@nats-io/jetstream";
import type { BusMessage, EventBus } from "../types.js";
import { fromNatsError } from "./errors.js";

/** The stream that keeps PoseLoop's events, so that publishing is acknowledged and events can be audited. */
export const EVENTS_STREAM = "POSELOOP_EVENTS";
const EVENTS_SUBJECTS = ["poseloop.models.>", "poseloop.events.>"];

/**
 * Events on NATS: published through JetStream (stored, acknowledged, deduplicated by the stream) and received
 * by plain subscriptions, so any number of inferencers hear every publication.
 */
export class NatsEventBus implements EventBus {
  readonly #connection: NatsConnection;
  readonly #js: JetStreamClient;

  private constructor(connection: NatsConnection, js: JetStreamClient) {
    this.#connection = connection;
    this.#js = js;
  }

  static async open(connection: NatsConnection, js: JetStreamOptions = {}): Promise<NatsEventBus> {
    try {
      const jsm = await jetstreamManager(connection, js);
      const existing = await jsm.streams.info(EVENTS_STREAM).catch(() => undefined);
      if (existing === undefined) {
        await jsm.streams.add({
          name: EVENTS_STREAM,
          subjects: EVENTS_SUBJECTS,
          retention: RetentionPolicy.Limits,
          storage: StorageType.File,
          max_age: 30 * 24 * 3600 * 1_000_000_000,
          max_msgs_per_subject: 1000,
        });
      }
      return new NatsEventBus(connection, jetstream(connection, js));
    } catch (error) {
      throw fromNatsError(error, `open stream ${EVENTS_STREAM}`);
    }
  }

  async publish(subject: string, data: Uint8Array, headers: Readonly<Record<string, string>> = {}): Promise<void> {
    const hdrs = natsHeaders();
    for (const [key, value] of Object.entries(headers)) hdrs.set(key, value);
    try {
      await this.#js.publish(subject, data, { headers: hdrs });
    } catch (error) {
      throw fromNatsError(error, `publish on ${subject}`);
    }
  }

  async *subscribe(pattern: string, signal: AbortSignal): AsyncGenerator<BusMessage> {
    if (signal.aborted) return;
    const subscription = this.#connection.subscribe(pattern);
    const stop = (): void => subscription.unsubscribe();
    signal.addEventListener("abort", stop, { once: true });
    try {
      for await (const message of subscription) {
        yield { subject: message.subject, data: message.data, headers: headersToRecord(message.headers) };
      }
    } finally {
      signal.removeEventListener("abort", stop);
      subscription.unsubscribe();
    }
  }
}

export function headersToRecord(headers: MsgHdrs | undefined): Record<string, string> {
  const record: Record<string, string> = {};
  if (headers === undefined) return record;
  for (const key of headers.keys()) record[key] = headers.get(key);
  return record;
}
