"""Top-down training batches, built as libs/data's TopDownBatchBuilder builds them (top-down-batch.ts).

For each sample: check its annotation, decode its image (through the image store), derive the crop region from
its box, apply the augmentation drawn from (seed, epoch, sample index), warp the crop into the batch tensor, map
the keypoints through the same affine and encode them into the batch's heatmaps. Every step is the TypeScript
one in the same order with the same floating-point operations, so a batch is the TypeScript loader's batch; the
one difference is that images are decoded one after another (the parallelism is the loader's worker processes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .augment import augment_region, jitter_colours, paste_occlusion, sample_augmentation
from .codecs import create_codec
from .geometry import (apply_affine, box_to_crop_region, compose_affine, crop_affine, flip_permutation,
                       invert_affine, upper_body_joints)
from .images import DataError, ImageStore, image_label
from .seeded_random import AUGMENT_STREAM, SeededRandom, js_number_string
from .warp import normalize_in_place, warp_to_tensor

BAD_SAMPLE_POLICIES = ("fail", "skip")

# Codes that say a sample's data is bad (and may be skipped), as opposed to the machine being in trouble.
DATA_ERROR_CODES = frozenset({"INVALID_ARGUMENT", "NOT_FOUND", "DATA_LOSS"})

# The 0-255 scale as is: crops that get pixel augmentation are warped raw and normalized afterwards.
_RAW_RGB: dict[str, Any] = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "channelOrder": "RGB"}

# libs/data's DecodedImageStore default (per worker).
DEFAULT_IMAGE_MEMORY_BYTES = 256 * 1024 * 1024


@dataclass
class Batch:
    """One batch in the layout the step takes; a skipped sample's slot holds zeros and weight 0."""

    epoch: int
    index: int
    #: Sample indices of the batch, in order.
    samples: np.ndarray
    #: Crops [n, 3, H, W], normalized.
    images: np.ndarray
    #: The codec's heatmaps [n, K, h, w].
    targets: np.ndarray
    #: [n, K]; 0 for unlabelled joints, joints outside the crop and skipped samples.
    target_weights: np.ndarray
    #: {"sampleIndex", "imageId", "code", "message"} per sample left out under the "skip" policy.
    skipped: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class SampleTable:
    """libs/data's SampleTable as numpy arrays (the JSON holds lists, NaN as null)."""

    kind: str
    count: int
    num_keypoints: int
    image_paths: tuple[str, ...]
    image_index: np.ndarray
    image_ids: np.ndarray
    image_sizes: np.ndarray
    annotation_ids: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    areas: np.ndarray
    keypoints: np.ndarray
    visibility: np.ndarray

    @staticmethod
    def from_json(table: dict[str, Any]) -> SampleTable:
        def floats(name: str, dtype: type) -> np.ndarray:
            values = table[name]
            if isinstance(values, np.ndarray):
                return values.astype(dtype, copy=False)
            return np.array([math.nan if v is None else v for v in values], dtype=dtype)

        result = SampleTable(
            kind=str(table["kind"]),
            count=int(table["count"]),
            num_keypoints=int(table["numKeypoints"]),
            image_paths=tuple(str(path) for path in table["imagePaths"]),
            image_index=np.asarray(table["imageIndex"], dtype=np.int32),
            image_ids=floats("imageIds", np.float64),
            image_sizes=np.asarray(table["imageSizes"], dtype=np.int32),
            annotation_ids=floats("annotationIds", np.float64),
            boxes=floats("boxes", np.float64),
            scores=floats("scores", np.float64),
            areas=floats("areas", np.float64),
            keypoints=floats("keypoints", np.float32),
            visibility=np.asarray(table["visibility"], dtype=np.uint8),
        )
        n, k = result.count, result.num_keypoints
        expected = {"imageIndex": n, "imageIds": n, "imageSizes": 2 * n, "annotationIds": n, "boxes": 4 * n,
                    "scores": n, "areas": n, "keypoints": 2 * k * n, "visibility": k * n}
        problems = [f"table.{name} has {len(table[name])} values, expected {size}"
                    for name, size in expected.items() if len(table[name]) != size]
        if problems:
            raise ValueError("; ".join(problems))
        return result

    def packed(self) -> dict[str, Any]:
        """The table in its JSON form with numpy arrays for the lists: a worker process then receives a few
        buffers instead of millions of Python floats (COCO's keypoints alone are 5 million)."""
        return {"kind": self.kind, "count": self.count, "numKeypoints": self.num_keypoints, "imagePaths": list(self.image_paths),
                "imageIndex": self.image_index, "imageIds": self.image_ids, "imageSizes": self.image_sizes,
                "annotationIds": self.annotation_ids, "boxes": self.boxes, "scores": self.scores, "areas": self.areas,
                "keypoints": self.keypoints, "visibility": self.visibility}


class TopDownBatchBuilder:
    """Builds batches of top-down training samples from a BatchBuilderConfig (JSON, libs/data's fields).

    One builder per process: its codec and image store are not shared. `build` raises DataError for a bad
    sample under the "fail" policy; under "skip" the sample's slot is zeros with weight 0 and it is listed in
    `Batch.skipped`.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.table = SampleTable.from_json(config["table"])
        size = config["inputSize"]
        self.input_size: tuple[int, int] = (int(size["width"]), int(size["height"]))
        self.codec = create_codec(config["codec"])
        self.schema: dict[str, Any] = config["schema"]
        self.padding = float(config["padding"])
        self.normalization: dict[str, Any] = config["normalization"]
        self.augmentation: dict[str, Any] | None = config.get("augmentation")
        self.seed = int(config["seed"])
        self.bad_samples = str(config["badSamples"])
        if self.bad_samples not in BAD_SAMPLE_POLICIES:
            raise ValueError(f'badSamples must be "fail" or "skip", got {self.bad_samples!r}')
        if self.table.kind == "instances" and self.table.num_keypoints != self.codec.num_keypoints:
            raise ValueError(f"the codec has {self.codec.num_keypoints} keypoints, the table {self.table.num_keypoints}")
        cache = config.get("imageCache") or {}
        self.images = ImageStore(int(cache.get("memoryBytes", DEFAULT_IMAGE_MEMORY_BYTES)), float(config["readTimeoutMs"]) / 1000)
        self._flip = list(flip_permutation(self.schema))
        self._upper = list(upper_body_joints(self.schema))
        k = self.codec.num_keypoints
        # Float32 as the TypeScript builder's scratch arrays: the codec sees crop keypoints rounded to float32.
        self._keypoints = np.zeros(2 * k, dtype=np.float32)
        self._visibility = np.zeros(k, dtype=np.float32)
        self._input_area = self.input_size[0] * self.input_size[1]
        self._target_shape = [int(v) for v in self.codec.target_shape[0]]
        self._target_size = int(np.prod(self._target_shape))

    def build(self, epoch: int, index: int, samples: Sequence[int],
              out: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> Batch:
        """The batch of `samples` (sample indices, in order). `out` are C-contiguous float32 arrays of
        n * 3 * H * W, n * K * h * w and n * K values for the images, targets and weights (contents
        ignored: every slot is written), so a loader worker can build straight into shared memory."""
        table = self.table
        size = len(samples)
        k = self.codec.num_keypoints
        width, height = self.input_size
        target_shape = self._target_shape
        sizes = (size * 3 * self._input_area, size * self._target_size, size * k)
        if out is None:
            images, targets, target_weights = (np.zeros(n, dtype=np.float32) for n in sizes)
        else:
            images, targets, target_weights = (_flat(array, n) for array, n in zip(out, sizes))
        skipped: list[dict[str, Any]] = []
        for slot, sample in enumerate(samples):
            sample_index = int(sample)
            try:
                image = self._load_image(sample_index)
                self._fill_sample(image, sample_index, epoch, slot, images, targets, target_weights)
            except DataError as error:
                if self.bad_samples == "fail" or error.code not in DATA_ERROR_CODES:
                    raise
                skipped.append({"sampleIndex": sample_index, "imageId": _id(table.image_ids[sample_index]),
                                "code": error.code, "message": error.message})
                self._empty_slot(slot, images, targets, target_weights)
        return Batch(epoch=epoch, index=index, samples=np.asarray(samples, dtype=np.int64),
                     images=images.reshape(size, 3, height, width), targets=targets.reshape(size, *target_shape),
                     target_weights=target_weights.reshape(size, k), skipped=skipped)

    def _label(self, sample_index: int) -> str:
        table = self.table
        return image_label(_id(table.image_ids[sample_index]), table.image_paths[table.image_index[sample_index]])

    def _load_image(self, sample_index: int) -> np.ndarray:
        """Checks the sample's annotation first, so a bad box or keypoint fails without reading the image."""
        table = self.table
        label = self._label(sample_index)
        self._check_annotation(sample_index, label)
        image = self.images.get(table.image_paths[table.image_index[sample_index]], label)
        expected_width = int(table.image_sizes[2 * sample_index])
        expected_height = int(table.image_sizes[2 * sample_index + 1])
        decoded_height, decoded_width = image.shape[0], image.shape[1]
        if decoded_width != expected_width or decoded_height != expected_height:
            raise DataError("INVALID_ARGUMENT", f"{label} decodes to {decoded_width}x{decoded_height} but is annotated as {expected_width}x{expected_height}")
        return image

    def _check_annotation(self, sample_index: int, label: str) -> None:
        table = self.table
        annotation_id = float(table.annotation_ids[sample_index])
        annotation = f"box {sample_index}" if math.isnan(annotation_id) else f"annotation {js_number_string(annotation_id)}"
        box = [float(v) for v in table.boxes[4 * sample_index:4 * sample_index + 4]]
        if not all(math.isfinite(v) for v in box) or not (box[2] > 0 and box[3] > 0):
            raise DataError("INVALID_ARGUMENT", f"{label}: the box of {annotation} [{', '.join(js_number_string(v) for v in box)}] is empty or not finite")
        k = table.num_keypoints
        names = self.schema.get("names", [])
        for j in range(k):
            if table.visibility[k * sample_index + j] == 0:
                continue
            x = float(table.keypoints[2 * (k * sample_index + j)])
            y = float(table.keypoints[2 * (k * sample_index + j) + 1])
            if not math.isfinite(x) or not math.isfinite(y):
                name = names[j] if j < len(names) else "?"
                raise DataError("INVALID_ARGUMENT", f"{label}: keypoint {j} ({name}) of {annotation} is not a finite number")

    def _fill_sample(self, image: np.ndarray, sample_index: int, epoch: int, slot: int, images: np.ndarray,
                     targets: np.ndarray, target_weights: np.ndarray) -> None:
        table = self.table
        config = self.augmentation
        width, height = self.input_size
        k = table.num_keypoints
        x, y, w, h = (float(v) for v in table.boxes[4 * sample_index:4 * sample_index + 4])
        frame_keypoints = table.keypoints[2 * k * sample_index:2 * k * (sample_index + 1)]
        frame_visibility = table.visibility[k * sample_index:k * (sample_index + 1)]
        augmentation = None
        region = box_to_crop_region((x, y, w, h), self.input_size, self.padding)
        if config is not None:
            augmentation = sample_augmentation(config, SeededRandom(self.seed, AUGMENT_STREAM, epoch, sample_index))
            joints = (frame_keypoints, frame_visibility, self._upper) if k > 0 else None
            region = augment_region(region, augmentation, config, joints, self.input_size)
        flipped = bool(augmentation is not None and augmentation.flip)
        try:
            to_crop = crop_affine(region, self.input_size, self.codec.udp)
            # The flip mirrors the crop itself (x' = W - 1 - x), so a flipped crop is exactly the mirror image
            # of the unflipped one, as the flip test at inference mirrors its input.
            if flipped:
                to_crop = compose_affine((-1.0, 0.0, float(width - 1), 0.0, 1.0, 0.0), to_crop)
            to_frame = invert_affine(to_crop)
        except (ValueError, ArithmeticError) as error:
            raise DataError("INVALID_ARGUMENT", f"{self._label(sample_index)}: no crop can be made of its box") from error

        offset = slot * 3 * self._input_area
        pixel_augmentation = augmentation is not None and (
            augmentation.occlusion is not None or augmentation.brightness != 1
            or augmentation.contrast != 1 or augmentation.saturation != 1)
        if augmentation is None or not pixel_augmentation:
            warp_to_tensor(image, to_frame, width, height, self.normalization, images, offset)
        else:
            warp_to_tensor(image, to_frame, width, height, _RAW_RGB, images, offset)
            jitter_colours(images, offset, self._input_area, augmentation)
            occlusion = augmentation.occlusion
            if occlusion is not None:
                noise = SeededRandom(occlusion.noise_seed) if occlusion.colour is None else None
                paste_occlusion(images, offset, width, height, occlusion, noise)
            normalize_in_place(images, offset, self._input_area, self.normalization)

        if k == 0:
            # Validation boxes have nothing to encode: their slots hold no target and weight 0.
            self._empty_targets(slot, targets, target_weights)
        else:
            keypoints = self._keypoints
            visibility = self._visibility
            for j in range(k):
                source = self._flip[j] if flipped else j
                v = int(frame_visibility[source])
                if v > 0:
                    cx, cy = apply_affine(to_crop, float(frame_keypoints[2 * source]), float(frame_keypoints[2 * source + 1]))
                else:
                    cx, cy = 0.0, 0.0
                keypoints[2 * j] = cx
                keypoints[2 * j + 1] = cy
                # A joint outside the crop's pixels does not train: the model cannot see it in its input.
                inside = -0.5 <= cx < width - 0.5 and -0.5 <= cy < height - 0.5
                visibility[j] = v if v > 0 and inside else 0
            self.codec.encode(keypoints, visibility, [targets], target_weights, slot)

    def _empty_slot(self, slot: int, images: np.ndarray, targets: np.ndarray, target_weights: np.ndarray) -> None:
        """A skipped sample's slot: zeros (the mean colour once normalized) and weight 0, so it adds no loss."""
        plane = 3 * self._input_area
        images[slot * plane:(slot + 1) * plane] = 0
        self._empty_targets(slot, targets, target_weights)

    def _empty_targets(self, slot: int, targets: np.ndarray, target_weights: np.ndarray) -> None:
        size = self._target_size
        targets[slot * size:(slot + 1) * size] = 0
        k = self.codec.num_keypoints
        target_weights[slot * k:(slot + 1) * k] = 0


def _flat(array: np.ndarray, size: int) -> np.ndarray:
    if not (isinstance(array, np.ndarray) and array.dtype == np.float32 and array.flags.c_contiguous
            and array.flags.writeable and array.size == size):
        raise ValueError(f"an output array must be a writeable C-contiguous float32 array of {size} values")
    return array.reshape(-1)


def _id(value: float) -> int | float:
    """An id as an int where it is one (COCO ids are), so it prints and compares like the TypeScript number."""
    return int(value) if math.isfinite(value) and value == int(value) else float(value)
