"""libs/data's training augmentation (augmentation.ts) in Python: the same draws, regions and pixels.

`config` is a ResolvedAugmentation as JSON (the TypeScript's field names: flip, rotationFactor, rotationProb,
scaleFactor, halfBodyProb, halfBodyMinKeypoints, occlusionProb, colorJitter). Pixel functions work in place on
a flat float32 array holding three 0–255 RGB planes at `offset`, with the TypeScript's arithmetic: float64
maths, rounded to float32 where the TypeScript stores into its Float32Array, in the same order (the grey sum
of the contrast step is accumulated sequentially, as the TypeScript loop does), so the pixels are identical.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .geometry import CropRegion, Size
from .seeded_random import SeededRandom, js_max, js_min, js_round

# RTMPose's CoarseDropout: one hole of 20–40 % of each side of the crop.
OCCLUSION_MIN_SIDE = 0.2
OCCLUSION_MAX_SIDE = 0.4

Joints = tuple[np.ndarray, np.ndarray, Sequence[bool]]


@dataclass(frozen=True)
class OcclusionPatch:
    """A rectangle pasted over the crop, in fractions of the crop's width and height."""

    x: float
    y: float
    width: float
    height: float
    # A solid colour (0–255 RGB), or None for uniform noise drawn from `noise_seed`.
    colour: Optional[tuple[int, int, int]]
    noise_seed: int


@dataclass(frozen=True)
class SampleAugmentation:
    """What augmentation does to one sample in one epoch (the TS SampleAugmentation, snake_case)."""

    half_body: bool
    prefer_upper: bool
    scale: float
    rotation: float
    flip: bool
    occlusion: Optional[OcclusionPatch]
    brightness: float
    contrast: float
    saturation: float


def sample_augmentation(config: Mapping[str, Any], random: SeededRandom) -> SampleAugmentation:
    """Draws one sample's augmentation: every draw happens whatever the config, in the TypeScript's order."""
    half_body_draw = random.next()
    upper_draw = random.next()
    scale_draw = random.normal()
    rotation_coin = random.next()
    rotation_draw = random.normal()
    flip_draw = random.next()
    occlusion_coin = random.next()
    patch_width = random.next()
    patch_height = random.next()
    patch_x = random.next()
    patch_y = random.next()
    patch_noise = random.next()
    colour = (random.int(0, 255), random.int(0, 255), random.int(0, 255))
    noise_seed = random.next_uint32()
    jitter = (random.next(), random.next(), random.next())

    sf = config["scaleFactor"]
    rf = config["rotationFactor"]
    occlusion: Optional[OcclusionPatch] = None
    if occlusion_coin < config["occlusionProb"]:
        width = OCCLUSION_MIN_SIDE + (OCCLUSION_MAX_SIDE - OCCLUSION_MIN_SIDE) * patch_width
        height = OCCLUSION_MIN_SIDE + (OCCLUSION_MAX_SIDE - OCCLUSION_MIN_SIDE) * patch_height
        occlusion = OcclusionPatch(
            x=patch_x * (1 - width),
            y=patch_y * (1 - height),
            width=width,
            height=height,
            colour=colour if patch_noise < 0.5 else None,
            noise_seed=noise_seed,
        )
    color_jitter = config["colorJitter"]

    def factor(draw: float) -> float:
        return 1 + color_jitter * (2 * draw - 1)

    rotated = rf > 0 and rotation_coin < config["rotationProb"]
    return SampleAugmentation(
        half_body=half_body_draw < config["halfBodyProb"],
        prefer_upper=upper_draw < 0.5,
        scale=js_min(1 + sf, js_max(1 - sf, 1 + sf * scale_draw)),
        rotation=js_min(2 * rf, js_max(-2 * rf, rf * rotation_draw)) if rotated else 0.0,
        flip=bool(config["flip"]) and flip_draw < 0.5,
        occlusion=occlusion,
        brightness=factor(jitter[0]),
        contrast=factor(jitter[1]),
        saturation=factor(jitter[2]),
    )


def half_body_region(keypoints: np.ndarray, visibility: np.ndarray, upper: Sequence[bool], prefer_upper: bool, input_size: Size) -> Optional[CropRegion]:
    """HRNet's half-body crop: the labelled joints of the preferred half (the other when it has too few),
    their box's centre and its aspect-fixed size times 1.5. None when fewer than two joints qualify."""
    flat = np.asarray(keypoints).reshape(-1)
    vis = np.asarray(visibility).reshape(-1)
    upper_joints: list[int] = []
    lower_joints: list[int] = []
    for j in range(len(upper)):
        if not (j < len(vis) and vis[j] > 0):
            continue
        (upper_joints if upper[j] else lower_joints).append(j)
    if prefer_upper and len(upper_joints) > 2:
        selected = upper_joints
    elif len(lower_joints) > 2:
        selected = lower_joints
    else:
        selected = upper_joints
    if len(selected) < 2:
        return None
    x0 = math.inf
    y0 = math.inf
    x1 = -math.inf
    y1 = -math.inf
    sx = 0.0
    sy = 0.0
    for j in selected:
        x = float(flat[2 * j])
        y = float(flat[2 * j + 1])
        sx += x
        sy += y
        x0 = js_min(x0, x)
        y0 = js_min(y0, y)
        x1 = js_max(x1, x)
        y1 = js_max(y1, y)
    aspect_ratio = input_size[0] / input_size[1]
    width = x1 - x0
    height = y1 - y0
    if width > aspect_ratio * height:
        height = width / aspect_ratio
    elif width < aspect_ratio * height:
        width = height * aspect_ratio
    if not (width > 0 and height > 0):
        return None
    return CropRegion(center=(sx / len(selected), sy / len(selected)), scale=(width * 1.5, height * 1.5), rotation=0.0)


def augment_region(region: CropRegion, aug: SampleAugmentation, config: Mapping[str, Any], joints: Optional[Joints], input_size: Size) -> CropRegion:
    """The region a sample's crop shows after the geometric augmentations: the half-body region when the coin
    and the joints allow, then scaled and rotated. `joints` is (keypoints [K, 2], visibility [K], upper) or None."""
    base = region
    if aug.half_body and joints is not None:
        keypoints, visibility, upper = joints
        vis = np.asarray(visibility).reshape(-1)
        labelled = int(np.count_nonzero(vis[: len(upper)] > 0))
        if labelled > config["halfBodyMinKeypoints"]:
            half = half_body_region(keypoints, visibility, upper, aug.prefer_upper, input_size)
            if half is not None:
                base = half
    return CropRegion(
        center=(base.center[0], base.center[1]),
        scale=(base.scale[0] * aug.scale, base.scale[1] * aug.scale),
        rotation=base.rotation + aug.rotation,
    )


def _flat_view(images: np.ndarray) -> np.ndarray:
    if not (isinstance(images, np.ndarray) and images.dtype == np.float32 and images.flags.c_contiguous and images.flags.writeable):
        raise ValueError("images must be a writeable C-contiguous float32 numpy array")
    return images.reshape(-1)


def _clamp_byte(values: np.ndarray) -> np.ndarray:
    # Not np.clip: the TypeScript lets NaN through and keeps -0.
    return np.where(values < 0, 0.0, np.where(values > 255, 255.0, values))


def jitter_colours(images: np.ndarray, offset: int, plane_size: int, aug: SampleAugmentation) -> None:
    """Brightness, then contrast (around the crop's mean grey), then saturation (around each pixel's grey), each
    clamped to 0–255, on the three planes at `offset` of `images`, in place."""
    brightness, contrast, saturation = aug.brightness, aug.contrast, aug.saturation
    if brightness == 1 and contrast == 1 and saturation == 1:
        return
    planes = _flat_view(images)
    r = slice(offset, offset + plane_size)
    g = slice(offset + plane_size, offset + 2 * plane_size)
    b = slice(offset + 2 * plane_size, offset + 3 * plane_size)
    red = _clamp_byte(planes[r].astype(np.float64) * brightness)
    green = _clamp_byte(planes[g].astype(np.float64) * brightness)
    blue = _clamp_byte(planes[b].astype(np.float64) * brightness)
    planes[r] = red
    planes[g] = green
    planes[b] = blue
    # The grey sum uses the float64 values, before the float32 store, and runs in pixel order (np.sum would pair).
    terms = 0.299 * red + 0.587 * green + 0.114 * blue
    grey_sum = float(np.add.accumulate(terms)[-1]) if plane_size > 0 else 0.0
    mean = grey_sum / plane_size if plane_size > 0 else math.nan
    red = _clamp_byte((planes[r].astype(np.float64) - mean) * contrast + mean)
    green = _clamp_byte((planes[g].astype(np.float64) - mean) * contrast + mean)
    blue = _clamp_byte((planes[b].astype(np.float64) - mean) * contrast + mean)
    grey = 0.299 * red + 0.587 * green + 0.114 * blue
    planes[r] = _clamp_byte(grey + (red - grey) * saturation)
    planes[g] = _clamp_byte(grey + (green - grey) * saturation)
    planes[b] = _clamp_byte(grey + (blue - grey) * saturation)


def paste_occlusion(images: np.ndarray, offset: int, width: int, height: int, occlusion: OcclusionPatch, noise: Optional[SeededRandom]) -> None:
    """Pastes the occlusion patch over the three `width` x `height` planes at `offset`, in place. A noise patch
    takes `noise.int(0, 255)` per pixel and channel in the TypeScript's order (rows, columns, then R, G, B)."""
    planes = _flat_view(images)
    plane_size = width * height
    x0 = int(js_round(occlusion.x * width))
    y0 = int(js_round(occlusion.y * height))
    x1 = min(width, x0 + int(js_max(1, js_round(occlusion.width * width))))
    y1 = min(height, y0 + int(js_max(1, js_round(occlusion.height * height))))
    if x1 <= x0 or y1 <= y0:
        return
    rows = np.arange(y0, y1, dtype=np.int64)
    columns = np.arange(x0, x1, dtype=np.int64)
    pixels = offset + rows[:, None] * width + columns[None, :]
    targets = (pixels[:, :, None] + np.arange(3, dtype=np.int64) * plane_size).reshape(-1)
    if occlusion.colour is not None:
        values = np.broadcast_to(np.asarray(occlusion.colour, dtype=np.float64), pixels.shape + (3,)).reshape(-1)
    elif noise is not None:
        values = noise.ints(0, 255, targets.size)
    else:
        values = np.zeros(targets.size)
    # A Float32Array ignores writes outside it; so does this.
    inside = (targets >= 0) & (targets < planes.size)
    planes[targets[inside]] = values[inside]
