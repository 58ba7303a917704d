"""The encode side of libs/pose's heatmap codecs: the training targets the TypeScript loader writes.

`create_codec(spec)` takes the KeypointCodecSpec JSON of a model manifest and returns the codec that
libs/pose's createKeypointCodec builds from it: MSRA (targets at the nearest heatmap pixel, or at the exact
sub-pixel position with DARK refinement: DarkPose's "unbiased" encoding) or UDP (`unbiased: true`). Only
encoding is ported: the PyTorch engine trains heatmap heads, and decoding stays on the TypeScript side.

The arithmetic follows the TypeScript operation for operation (float64, rounded once when stored to float32),
so the targets are the same floats the TypeScript loader writes.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

_REFINEMENTS = ("none", "quarter-offset", "dark")


def _positive_integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer() or value <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _size(value: Any, what: str) -> tuple[int, int]:
    """(width, height) of a TS Size object, both positive integers."""
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be an object with width and height, got {value!r}")
    width, height = value.get("width"), value.get("height")
    for v in (width, height):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v).is_integer() or v <= 0:
            raise ValueError(f"{what} must have positive integer width and height, got {width}x{height}")
    return int(width), int(height)  # type: ignore[arg-type]


class HeatmapCodec:
    """Gaussian heatmaps, one plane per keypoint (K x H x W per instance), as libs/pose's HeatmapCodec.

    A joint trains (weight > 0) when it is labelled (visibility >= 0.5; weight min(v, 1)) and some heatmap pixel
    lies within 3 sigma of its Gaussian's centre; otherwise its plane is all zero and its weight 0.
    """

    def __init__(self, kind: str, input_size: tuple[int, int], heatmap_size: tuple[int, int], num_keypoints: int,
                 sigma: float, refinement: str, placement: str, udp: bool) -> None:
        width, height = heatmap_size
        in_width, in_height = input_size
        if udp and (width < 2 or height < 2 or in_width < 2 or in_height < 2):
            raise ValueError("UDP needs input and heatmap sizes of at least 2 pixels on each side")
        self.kind = kind
        self.input_size = input_size
        self.heatmap_size = heatmap_size
        self.num_keypoints = num_keypoints
        self.sigma = sigma
        self.refinement = refinement
        self.udp = udp
        self.target_shape: list[list[int]] = [[num_keypoints, height, width]]
        self._placement = placement
        # The same divisions as the TypeScript constructor, so the scale factors are the same doubles.
        if udp:
            self._to_heatmap = ((width - 1) / (in_width - 1), (height - 1) / (in_height - 1))
        else:
            self._to_heatmap = (width / in_width, height / in_height)

    def encode(self, keypoints: np.ndarray | Sequence[float], visibility: np.ndarray | Sequence[float] | None,
               targets: Sequence[np.ndarray], weights: np.ndarray, index: int = 0) -> None:
        """Writes instance `index`'s heatmaps into targets[0] and its K weights into `weights`, in place.

        `keypoints` are [x0, y0, x1, y1, ...] (or [K, 2]) in model-input pixels; `visibility` one value per
        keypoint (None: all 1). Instance `index` occupies [index*K*H*W, (index+1)*K*H*W) of the flattened
        targets[0] and [index*K, (index+1)*K) of the flattened weights; both must be C-contiguous float32.
        """
        k = self.num_keypoints
        width, height = self.heatmap_size
        plane_size = width * height
        points = np.asarray(keypoints, dtype=np.float64).reshape(-1)
        if points.size != 2 * k:
            raise ValueError(f"keypoints must have {2 * k} values, got {points.size}")
        _require_all_finite(points, "keypoints")
        if visibility is None:
            vis = np.ones(k, dtype=np.float64)
        else:
            vis = np.asarray(visibility, dtype=np.float64).reshape(-1)
            if vis.size != k:
                raise ValueError(f"visibility must have {k} values, got {vis.size}")
            _require_all_finite(vis, "visibility")
        if len(targets) < 1:
            raise ValueError("heatmap target: no destination array")
        heatmaps = _instance_slice(targets[0], index, k * plane_size, "heatmap target").reshape(k, height, width)
        out_weights = _instance_slice(weights, index, k, "target weights")
        heatmaps.fill(0)
        for j in range(k):
            v = float(vis[j])
            weight = 0.0 if v < 0.5 else min(v, 1.0)
            if weight > 0:
                hx = float(points[2 * j]) * self._to_heatmap[0]
                hy = float(points[2 * j + 1]) * self._to_heatmap[1]
                if not self._draw_gaussian(heatmaps[j], hx, hy):
                    weight = 0.0
            out_weights[j] = weight

    def _draw_gaussian(self, plane: np.ndarray, hx: float, hy: float) -> bool:
        """One joint's Gaussian into its zeroed plane; False when no pixel lies within 3 sigma."""
        width, height = self.heatmap_size
        sigma = self.sigma
        reach = 3 * sigma
        center_x, center_y = hx, hy
        x0, x1, y0, y1 = 0, width - 1, 0, height - 1
        if self._placement == "subpixel":
            if hx + reach < 0 or hx - reach > width - 1 or hy + reach < 0 or hy - reach > height - 1:
                return False
        else:
            mx = math.floor(hx + 0.5)
            my = math.floor(hy + 0.5)
            radius = math.floor(reach)
            if mx + radius < 0 or mx - radius > width - 1 or my + radius < 0 or my - radius > height - 1:
                return False
            x0 = max(0, mx - radius)
            x1 = min(width - 1, mx + radius)
            y0 = max(0, my - radius)
            y1 = min(height - 1, my + radius)
            if self._placement == "rounded":
                center_x, center_y = float(mx), float(my)
        denominator = 2 * sigma * sigma
        # math.exp per value (glibc's libm, as for a scalar in V8's port of fdlibm, both within an ulp) rather
        # than numpy's vectorized exp, whose SIMD variants may round differently; the windows are small.
        gx = np.array([math.exp(-((x - center_x) * (x - center_x)) / denominator) for x in range(x0, x1 + 1)])
        gy = np.array([math.exp(-((y - center_y) * (y - center_y)) / denominator) for y in range(y0, y1 + 1)])
        plane[y0:y1 + 1, x0:x1 + 1] = np.multiply.outer(gy, gx)
        return True


def _require_all_finite(values: np.ndarray, what: str) -> None:
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size > 0:
        i = int(bad[0])
        raise ValueError(f"{what}[{i}] must be a finite number, got {values[i]}")


def _instance_slice(array: np.ndarray, index: int, size: int, what: str) -> np.ndarray:
    """Instance `index`'s slice of a batch array, as a writable view (never a copy)."""
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"instance index must be an integer >= 0, got {index!r}")
    if not isinstance(array, np.ndarray) or array.dtype != np.float32 or not array.flags.c_contiguous:
        raise ValueError(f"{what} must be a C-contiguous float32 numpy array")
    flat = array.reshape(-1)
    if flat.size < (index + 1) * size:
        raise ValueError(f"{what} for instance {index} must have at least {(index + 1) * size} values, got {flat.size}")
    return flat[index * size:(index + 1) * size]


def create_codec(spec: dict[str, Any]) -> HeatmapCodec:
    """The heatmap codec a KeypointCodecSpec (JSON) describes, as libs/pose's createKeypointCodec.

    `{"kind": "heatmap", "unbiased": true}` is UDP (refinement "dark" by default); otherwise MSRA (refinement
    "quarter-offset" by default), with sub-pixel targets when `subpixelTargets` says so or, by default, with
    DARK refinement. Raises ValueError for SimCC (the PyTorch engine trains heatmap heads only), unknown kinds
    and invalid sizes, sigmas or kernel sizes.
    """
    kind = spec.get("kind")
    if kind == "simcc":
        raise ValueError("codec kind simcc is not supported by the PyTorch engine: it trains heatmap heads only")
    if kind != "heatmap":
        raise ValueError(f"unknown codec kind {kind!r}")
    input_size = _size(spec.get("inputSize"), "inputSize")
    heatmap_size = _size(spec.get("heatmapSize"), "heatmapSize")
    num_keypoints = _positive_integer(spec.get("numKeypoints"), "numKeypoints")
    sigma = spec.get("sigma")
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a positive number, got {sigma!r}")
    blur = spec.get("blurKernelSize", 11)
    if _positive_integer(blur, "blur kernel size") % 2 != 1:
        raise ValueError(f"blur kernel size must be odd, got {blur}")
    unbiased = spec.get("unbiased") is True
    refinement = spec.get("refinement", "dark" if unbiased else "quarter-offset")
    if refinement not in _REFINEMENTS:
        raise ValueError(f"refinement must be one of {', '.join(_REFINEMENTS)}, got {refinement!r}")
    if unbiased:
        return HeatmapCodec("udp-heatmap", input_size, heatmap_size, num_keypoints, float(sigma), refinement,
                            "subpixel-window", True)
    subpixel = spec.get("subpixelTargets")
    placement = "subpixel" if (refinement == "dark" if subpixel is None else bool(subpixel)) else "rounded"
    return HeatmapCodec("msra-heatmap", input_size, heatmap_size, num_keypoints, float(sigma), refinement,
                        placement, False)
