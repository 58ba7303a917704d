import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Objm } from "@nats-io/obj";
import { connect } from "@nats-io/transport-node";
import { inject } from "vitest";
import { NatsBus } from "@poseloop/bus";
import { describeBusContract } from "./testing/bus-contract.js";

describeBusContract("nats", () => ({
  connect: () => NatsBus.connect({ servers: inject("natsUrl"), name: "bus-contract" }),
  async corruptBlob(bucket, name) {
    const connection = await connect({ servers: inject("natsUrl") });
    try {
      const store = await new Objm(connection).open(bucket);
      const info = await store.info(name);
      if (info === null) throw new Error(`no object ${name}`);
      const stream = `OBJ_${bucket}`;
      const subject = `$O.${bucket}.C.${info.nuid}`;
      const jsm = await jetstreamManager(connection);
      const last = await jsm.streams.getMessage(stream, { last_by_subj: subject });
      if (last === null) throw new Error(`no chunk for ${name}`);
      const altered = new Uint8Array(last.data);
      altered[0] = (altered[0] ?? 0) ^ 0xff;
      await jsm.streams.deleteMessage(stream, last.seq);
      await jetstream(connection).publish(subject, altered);
    } finally {
      await connection.close();
    }
  },
}));
