"""The crop warp of libs/vision (warpToTensor) and the normalization of libs/data (normalizeInPlace), in numpy.

Both follow the TypeScript formulas operation for operation in float64 and round once when storing to float32,
so a crop is the same floats the TypeScript loader writes: the source point advances by repeated addition
along a row (a cumulative sum, which numpy evaluates left to right), the interior bilinear blend is the same
three lerps, and border pixels sum their in-image neighbours in the same order.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

IMAGENET_NORMALIZATION: dict[str, Any] = {
    "mean": (123.675, 116.28, 103.53),
    "std": (58.395, 57.12, 57.375),
    "channelOrder": "RGB",
}


def _normalization(normalization: dict[str, Any]) -> tuple[Sequence[float], Sequence[float], bool]:
    mean = normalization["mean"]
    std = normalization["std"]
    if len(mean) != 3 or len(std) != 3:
        raise ValueError("normalization mean and std must have 3 values each")
    if not all(math.isfinite(s) and s != 0 for s in std) or not all(math.isfinite(m) for m in mean):
        raise ValueError("normalization mean must be finite and std finite and non-zero")
    return mean, std, normalization.get("channelOrder", "RGB") == "BGR"


def _planes(out: np.ndarray, offset: int, plane_size: int, what: str) -> np.ndarray:
    """out[offset : offset + 3*plane_size] as a writable [3, plane_size] view."""
    if not isinstance(out, np.ndarray) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"{what} must be a C-contiguous float32 numpy array")
    flat = out.reshape(-1)
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or offset < 0 or offset + 3 * plane_size > flat.size:
        raise ValueError(f"a 3x{plane_size} tensor at offset {offset} does not fit an output of {flat.size} floats")
    return flat[offset:offset + 3 * plane_size].reshape(3, plane_size)


def warp_to_tensor(image: np.ndarray, inverse_affine: Sequence[float], out_w: int, out_h: int,
                   normalization: dict[str, Any], out: np.ndarray, out_offset: int = 0) -> None:
    """Warps a crop of `image` (uint8 [H, W, 3], RGB) into one CHW float32 tensor slot of `out` (flat).

    For output pixel (x, y) the source point is inverse_affine . (x, y, 1) with inverse_affine = (a, b, c, d, e, f):
    (a x + b y + c, d x + e y + f), sampled bilinearly with pixels outside the image counting as 0, then
    (value - mean) / std per channel; planes go to out[out_offset + c*H*W + y*W + x] in the normalization's
    channel order ("RGB" or "BGR").
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
        raise ValueError(f"image must be a non-empty uint8 array of shape [H, W, 3], got {getattr(image, 'shape', None)}")
    if isinstance(out_w, bool) or isinstance(out_h, bool) or not isinstance(out_w, (int, np.integer)) or not isinstance(out_h, (int, np.integer)) or out_w <= 0 or out_h <= 0:
        raise ValueError(f"warp output size {out_w}x{out_h} must be positive integers")
    plane_size = int(out_w) * int(out_h)
    planes = _planes(out, out_offset, plane_size, "the warp output")
    if len(inverse_affine) != 6 or not all(math.isfinite(v) for v in inverse_affine):
        raise ValueError("the warp affine has non-finite entries")
    mean, std, bgr = _normalization(normalization)
    a, b, c, d, e, f = (float(v) for v in inverse_affine)
    height, width = image.shape[0], image.shape[1]

    src = np.ascontiguousarray(image).reshape(-1)
    scales = [1 / std[channel] for channel in range(3)]
    biases = [-mean[channel] * scales[channel] for channel in range(3)]
    targets = (2, 1, 0) if bgr else (0, 1, 2)
    # Blocks of rows keep the float64 temporaries in cache (and out of mmap'ed allocations, which cost
    # page faults on every call): about 4096 pixels each.
    rows_per_block = max(1, _BLOCK_PIXELS // int(out_w))
    for row0 in range(0, int(out_h), rows_per_block):
        row1 = min(int(out_h), row0 + rows_per_block)
        rgb = _warp_rows(src, width, height, a, b, c, d, e, f, row0, row1, int(out_w))
        for channel in range(3):
            values = rgb[channel]
            values *= scales[channel]
            values += biases[channel]
            planes[targets[channel], row0 * out_w:row1 * out_w] = values


_BLOCK_PIXELS = 4096


def _warp_rows(src: np.ndarray, width: int, height: int, a: float, b: float, c: float, d: float, e: float,
               f: float, row0: int, row1: int, out_w: int) -> list[np.ndarray]:
    """Bilinear samples (0-255 scale, float64) of output rows [row0, row1), one flat array per channel."""
    # The TypeScript loop starts each row at (b y + c, e y + f) and adds (a, d) per column: a cumulative sum.
    rows = np.arange(row0, row1, dtype=np.float64)
    sx = np.empty((row1 - row0, out_w), dtype=np.float64)
    sy = np.empty((row1 - row0, out_w), dtype=np.float64)
    sx[:, 0] = b * rows + c
    sy[:, 0] = e * rows + f
    sx[:, 1:] = a
    sy[:, 1:] = d
    np.cumsum(sx, axis=1, out=sx)
    np.cumsum(sy, axis=1, out=sy)
    sx = sx.reshape(-1)
    sy = sy.reshape(-1)
    count = sx.size
    inside = (sx >= 0) & (sy >= 0) & (sx < width - 1) & (sy < height - 1)
    all_inside = bool(inside.all())
    rgb = [np.empty(count) if all_inside else np.zeros(count) for _ in range(3)]
    if all_inside:
        _interior(src, width, sx, sy, rgb, None)
    else:
        picked = np.flatnonzero(inside)
        if picked.size > 0:
            _interior(src, width, sx[picked], sy[picked], rgb, picked)
        edge = np.flatnonzero(~inside & (sx > -1) & (sy > -1) & (sx < width) & (sy < height))
        if edge.size > 0:
            _border(src, width, height, sx[edge], sy[edge], rgb, edge)
    return rgb


def _interior(src: np.ndarray, width: int, sx: np.ndarray, sy: np.ndarray, rgb: list[np.ndarray],
              where: np.ndarray | None) -> None:
    """All four neighbours inside: the TypeScript's three lerps, top and bottom along x, then along y."""
    x0 = sx.astype(np.int64)
    y0 = sy.astype(np.int64)
    wx = sx - x0
    wy = sy - y0
    i00 = (y0 * width + x0) * 3
    i10 = i00 + 3 * width
    for channel in range(3):
        p00 = src.take(i00 + channel)
        p01 = src.take(i00 + (channel + 3))
        p10 = src.take(i10 + channel)
        p11 = src.take(i10 + (channel + 3))
        # Differences of uint8 values computed in float64 (exact), as JS subtracts numbers.
        top = wx * np.subtract(p01, p00, dtype=np.float64)
        top += p00
        bottom = wx * np.subtract(p11, p10, dtype=np.float64)
        bottom += p10
        bottom -= top
        bottom *= wy
        bottom += top
        if where is None:
            rgb[channel] = bottom
        else:
            rgb[channel][where] = bottom


def _border(src: np.ndarray, width: int, height: int, sx: np.ndarray, sy: np.ndarray, rgb: list[np.ndarray],
            where: np.ndarray) -> None:
    """Within a pixel of the image: the in-image neighbours' weighted sum, in the TypeScript's order."""
    fx = np.floor(sx)
    fy = np.floor(sy)
    wx = sx - fx
    wy = sy - fy
    x0 = fx.astype(np.int64)
    y0 = fy.astype(np.int64)
    sums = [np.zeros(sx.size) for _ in range(3)]
    for k in range(4):
        nx = x0 + (k & 1)
        ny = y0 + (k >> 1)
        valid = (nx >= 0) & (ny >= 0) & (nx < width) & (ny < height)
        weight = (wx if k & 1 else 1 - wx) * (wy if k >> 1 else 1 - wy)
        # A neighbour outside adds an exact 0, which leaves the sum as the TypeScript's skip does.
        weight[~valid] = 0
        base = np.where(valid, (ny * width + nx) * 3, 0)
        for channel in range(3):
            sums[channel] += weight * src.take(base + channel)
    for channel in range(3):
        rgb[channel][where] = sums[channel]


def normalize_in_place(planes: np.ndarray, offset: int, plane_size: int, normalization: dict[str, Any]) -> None:
    """(v - mean) / std in place on three RGB planes at planes[offset:], reordered to the channel order."""
    mean, std, bgr = _normalization(normalization)
    view = _planes(planes, offset, plane_size, "the planes")
    values = view.astype(np.float64)
    red = (values[0] - mean[0]) / std[0]
    green = (values[1] - mean[1]) / std[1]
    blue = (values[2] - mean[2]) / std[2]
    view[0] = blue if bgr else red
    view[1] = green
    view[2] = red if bgr else blue
