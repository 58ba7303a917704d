import { COCO17, keypointSchemaByName } from "@poseloop/pose";
import type { ModelManifest } from "@poseloop/proto/poseloop/common/v1/model_pb";

/**
 * The OKS sigmas of a pose model with `keypoints` keypoints: its manifest's keypoint_schema.oks_sigmas when it
 * names one positive sigma per keypoint, else those of the known schema it names (blazepose-33, ...), else
 * COCO's for a 17-keypoint model. Undefined when none fits: OKS with another schema's sigmas would weigh each
 * keypoint by another keypoint's tolerance, or not line up with the keypoints at all.
 */
export function servingOksSigmas(manifest: ModelManifest | undefined, keypoints: number): readonly number[] | undefined {
  const schema = manifest?.keypointSchema;
  const named = schema?.oksSigmas ?? [];
  if (named.length === keypoints && named.every((sigma) => sigma > 0)) return [...named];
  const known = keypointSchemaByName(schema?.name ?? "");
  if (known !== undefined && known.sigmas.length === keypoints) return known.sigmas;
  return keypoints === COCO17.sigmas.length ? COCO17.sigmas : undefined;
}
