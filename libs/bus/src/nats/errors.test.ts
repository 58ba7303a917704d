import { JetStreamApiError } from "@nats-io/jetstream";
import { ClosedConnectionError, NoRespondersError, PermissionViolationError, RequestError, TimeoutError } from "@nats-io/nats-core";
import { AppError, Code } from "@poseloop/core";
import { describe, expect, it } from "vitest";
import { fromNatsError } from "./errors.js";

const apiError = (code: number, errCode: number, description: string): JetStreamApiError => new JetStreamApiError({ code, err_code: errCode, description });

describe("fromNatsError", () => {
  it("maps nats.js errors by class and JetStream code", () => {
    const cases: [unknown, Code][] = [
      [new TimeoutError(), Code.UNAVAILABLE],
      [new RequestError("connection closed"), Code.UNAVAILABLE],
      [new NoRespondersError("$JS.API.INFO"), Code.UNAVAILABLE],
      [new ClosedConnectionError(), Code.UNAVAILABLE],
      [PermissionViolationError.parse('Permissions Violation for Publish to "$JS.API.STREAM.INFO.X"'), Code.PERMISSION_DENIED],
      [new RequestError("denied", { cause: PermissionViolationError.parse('Permissions Violation for Publish to "$O.x"') }), Code.PERMISSION_DENIED],
      [apiError(400, 10071, "wrong last sequence: 3"), Code.ABORTED],
      [apiError(404, 10059, "stream not found"), Code.NOT_FOUND],
      [apiError(503, 10008, "JetStream system temporarily unavailable"), Code.UNAVAILABLE],
      [apiError(500, 10049, "insufficient resources"), Code.INTERNAL],
      [new Error("received a corrupt object, digests do not match\n  expected: x\n  computed: y"), Code.DATA_LOSS],
      [new Error("object store not found"), Code.NOT_FOUND],
      [new Error("something else"), Code.INTERNAL],
      ["not even an error", Code.INTERNAL],
    ];
    for (const [error, code] of cases) {
      const mapped = fromNatsError(error, "read x");
      expect(mapped.code, String(error)).toBe(code);
      expect(mapped.cause).toBe(error);
      expect(mapped.message.startsWith("read x")).toBe(true);
    }
    // A refusal names what the user may not do, so an operator can fix the deployment's permissions.
    expect(fromNatsError(PermissionViolationError.parse('Permissions Violation for Publish to "$O.x"'), "publish").message).toBe("publish: the NATS user may not publish to $O.x");
  });

  it("passes an AppError through", () => {
    const error = new AppError(Code.CANCELLED, "upload cancelled");
    expect(fromNatsError(error, "store x")).toBe(error);
  });
});
