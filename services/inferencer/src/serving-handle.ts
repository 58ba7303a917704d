import type { Timestamp } from "@bufbuild/protobuf/wkt";
import type { Link } from "@opentelemetry/api";
import type { ServingSpec } from "@poseloop/estimator";
import type { ModelManifest, ModelRef } from "@poseloop/proto/poseloop/common/v1/model_pb";

/** A loaded model version, counted while batches run on it (a pose model's by default, or a person detector's). */
export interface ServingHandle<Spec = ServingSpec> {
  readonly version: string;
  readonly manifest: ModelManifest;
  readonly spec: Spec;
  readonly ref: ModelRef;
  readonly trainingJobId: string;
  /** Link to the span that published this version (every frame span carries it). */
  readonly publishLink: Link | undefined;
  readonly loadedAt: Timestamp;
}

/** The version a batch runs on: taken when the batch leaves, released when its results are back. */
export interface VersionSource<Spec = ServingSpec> {
  acquire(): ServingHandle<Spec> | undefined;
  release(handle: ServingHandle<Spec>): void;
}
