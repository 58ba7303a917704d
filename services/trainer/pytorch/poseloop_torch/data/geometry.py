"""The crop geometry of libs/pose (affine.ts, top-down-crop.ts, keypoint-schema.ts) in Python.

An Affine2D is the tuple (a, b, c, d, e, f) of x' = a·x + b·y + c, y' = d·x + e·y + f, in the TypeScript's
order; a box is (x, y, width, height); a size is (width, height); a keypoint schema is the JSON of the TS
KeypointSchema (`names`, `flipPairs`, ...). The arithmetic is the TypeScript's, in the same order, so regions
and affines agree to the last bit except through `cos`/`sin` of a rotation, where V8 (fdlibm) and the C
library may differ in the last bit. Where the TypeScript throws a RangeError, this raises ValueError with
the same message.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .seeded_random import js_number_string

Affine2D = tuple[float, float, float, float, float, float]
Box = tuple[float, float, float, float]
Size = tuple[int, int]

IDENTITY: Affine2D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@dataclass(frozen=True)
class CropRegion:
    """The frame region a top-down model sees: `scale` = (width, height) frame pixels centred on `center`,
    turned by `rotation` degrees (positive turns the region clockwise in the frame, y down)."""

    center: tuple[float, float]
    scale: tuple[float, float]
    rotation: float = 0.0


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require_finite(value: Any, what: str) -> None:
    if not _is_finite_number(value):
        raise ValueError(f"{what} must be a finite number, got {_show(value)}")


def _require_positive(value: Any, what: str) -> None:
    if not (_is_finite_number(value) and value > 0):
        raise ValueError(f"{what} must be a positive number, got {_show(value)}")


def _show(value: Any) -> str:
    return js_number_string(value) if isinstance(value, (int, float)) else str(value)


def _is_integer(value: Any) -> bool:
    return _is_finite_number(value) and float(value).is_integer()


def _check_box(box: Box, what: str = "box") -> None:
    _require_finite(box[0], f"{what}.x")
    _require_finite(box[1], f"{what}.y")
    _require_positive(box[2], f"{what}.width")
    _require_positive(box[3], f"{what}.height")


def _check_size(size: Size, what: str) -> None:
    width, height = size
    if not (_is_integer(width) and width > 0 and _is_integer(height) and height > 0):
        raise ValueError(f"{what} must have positive integer width and height, got {_show(width)}x{_show(height)}")


def _check_region(region: CropRegion) -> None:
    _require_finite(region.center[0], "region.center[0]")
    _require_finite(region.center[1], "region.center[1]")
    _require_positive(region.scale[0], "region.scale[0]")
    _require_positive(region.scale[1], "region.scale[1]")
    _require_finite(region.rotation, "region.rotation")


def apply_affine(m: Affine2D, x: float, y: float) -> tuple[float, float]:
    """Maps the point (x, y)."""
    return m[0] * x + m[1] * y + m[2], m[3] * x + m[4] * y + m[5]


def apply_affine_to_points(m: Affine2D, points: np.ndarray) -> np.ndarray:
    """Maps points of shape [..., 2] (float64 result; the same arithmetic as `apply_affine`, vectorized)."""
    p = np.asarray(points, dtype=np.float64)
    x = p[..., 0]
    y = p[..., 1]
    return np.stack([m[0] * x + m[1] * y + m[2], m[3] * x + m[4] * y + m[5]], axis=-1)


def invert_affine(m: Affine2D) -> Affine2D:
    """The inverse map; raises ValueError on a singular matrix."""
    det = m[0] * m[4] - m[1] * m[3]
    if not math.isfinite(det) or abs(det) < 1e-12:
        raise ValueError("affine matrix is singular")
    a = m[4] / det
    b = -m[1] / det
    d = -m[3] / det
    e = m[0] / det
    return a, b, -(a * m[2] + b * m[5]), d, e, -(d * m[2] + e * m[5])


def compose_affine(second: Affine2D, first: Affine2D) -> Affine2D:
    """The map that applies `first`, then `second`."""
    return (
        second[0] * first[0] + second[1] * first[3],
        second[0] * first[1] + second[1] * first[4],
        second[0] * first[2] + second[1] * first[5] + second[2],
        second[3] * first[0] + second[4] * first[3],
        second[3] * first[1] + second[4] * first[4],
        second[3] * first[2] + second[4] * first[5] + second[5],
    )


def box_to_crop_region(box: Box, input_size: Size, padding: float = 1.25) -> CropRegion:
    """The crop region of a person box for a model whose input is `input_size`: the box's centre, its short
    side expanded to the input's aspect ratio, then both sides times `padding` (HRNet's `_xywh2cs`)."""
    _check_box(box)
    _check_size(input_size, "inputSize")
    _require_positive(padding, "padding")
    aspect_ratio = input_size[0] / input_size[1]
    x, y, box_width, box_height = box
    width = box_width
    height = box_height
    if width > aspect_ratio * height:
        height = width / aspect_ratio
    elif width < aspect_ratio * height:
        width = height * aspect_ratio
    return CropRegion(center=(x + box_width * 0.5, y + box_height * 0.5), scale=(width * padding, height * padding), rotation=0.0)


def crop_affine(region: CropRegion, input_size: Size, udp: bool = False) -> Affine2D:
    """Frame pixels → the crop of `input_size` pixels: HRNet's `get_affine_transform`, or with `udp` mmpose's
    `get_udp_warp_matrix` (the region onto pixel centres 0 … size − 1; one angle turns both the same way)."""
    _check_region(region)
    _check_size(input_size, "outputSize")
    radians = (region.rotation * math.pi) / 180
    cos = math.cos(radians)
    sin = math.sin(radians)
    cx, cy = region.center
    width, height = input_size
    if udp:
        sx = (width - 1) / region.scale[0]
        sy = (height - 1) / region.scale[1]
        ox = (width - 1) * 0.5
        oy = (height - 1) * 0.5
    else:
        sx = width / region.scale[0]
        sy = sx
        ox = width * 0.5
        oy = height * 0.5
    a = sx * cos
    b = sx * sin
    d = -sy * sin
    e = sy * cos
    return a, b, ox - (a * cx + b * cy), d, e, oy - (d * cx + e * cy)


def crop_inverse_affine(region: CropRegion, input_size: Size, udp: bool = False) -> Affine2D:
    """The inverse of `crop_affine`: crop pixels back to frame pixels."""
    return invert_affine(crop_affine(region, input_size, udp))


def flip_permutation(schema: Mapping[str, Any]) -> np.ndarray:
    """For each keypoint, the index it swaps with under a horizontal flip (itself when unpaired), int32."""
    permutation = np.arange(len(schema["names"]), dtype=np.int32)
    for a, b in schema["flipPairs"]:
        permutation[a] = b
        permutation[b] = a
    return permutation


_LOWER_BODY = re.compile("hip|knee|ankle|heel|toe|foot", re.IGNORECASE)


def upper_body_joints(schema: Mapping[str, Any]) -> list[bool]:
    """Per joint, whether it belongs to the upper body: HRNet's split of COCO-17, by name for any schema."""
    names: Sequence[str] = schema["names"]
    return [_LOWER_BODY.search(name) is None for name in names]
