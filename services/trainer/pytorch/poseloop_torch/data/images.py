"""Decoded images by path, as libs/data's DecodedImageStore: an LRU of RGB arrays bounded in bytes in front of
PIL's decoders, with the TypeScript store's error codes and messages.

Decoding matches libs/vision's decodeImage (sharp): JPEG, PNG or WebP by their signatures, the EXIF orientation
applied, alpha dropped, greyscale and 16-bit images converted to 8-bit RGB (16-bit values keep their high byte,
as libvips' cast does). Lossless formats decode to the same pixels; so did every JPEG compared (Debian's PIL 9.4
and sharp 0.35 both decode with libjpeg-turbo), though other builds may round an IDCT differently.
"""
from __future__ import annotations

import concurrent.futures
import errno
import io
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from PIL import Image, ImageOps

#: The largest image accepted (2^26 pixels), libs/vision's DEFAULT_MAX_PIXELS: a few header bytes can announce
#: a gigapixel image, so the bound is checked before any pixel is decoded.
DEFAULT_MAX_PIXELS = 1 << 26
DEFAULT_IMAGE_MEMORY_BYTES = 256 * 1024 * 1024

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TRUNCATED_WORDS = ("premature end", "truncated", "end of file", "unexpected end")
# The errno codes @poseloop/core's AppError.from maps, with its messages.
_ERRNO_CODES: dict[int, tuple[str, str]] = {
    errno.ENOENT: ("NOT_FOUND", "not found"),
    errno.EACCES: ("PERMISSION_DENIED", "permission denied"),
    errno.EPERM: ("PERMISSION_DENIED", "permission denied"),
    errno.ETIMEDOUT: ("DEADLINE_EXCEEDED", "operation timed out"),
    errno.ENOSPC: ("RESOURCE_EXHAUSTED", "no space left on device"),
    errno.EMFILE: ("RESOURCE_EXHAUSTED", "too many open files"),
    errno.ENOMEM: ("RESOURCE_EXHAUSTED", "out of memory"),
}


class DataError(Exception):
    """A data problem with a gRPC status code name ("NOT_FOUND", "INVALID_ARGUMENT", ...), like AppError."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def _node_basename(path: str) -> str:
    stripped = path.rstrip("/")
    if stripped == "":
        return "" if path == "" else "/"
    return stripped.rsplit("/", 1)[-1]


def _node_dirname(path: str) -> str:
    stripped = path.rstrip("/")
    if stripped == "":
        return "/" if path.startswith("/") else "."
    if "/" not in stripped:
        return "."
    parent = stripped.rsplit("/", 1)[0].rstrip("/")
    return parent if parent != "" else "/"


def image_label(image_id: int, path: str) -> str:
    """How an image is named in errors: its id and the last two parts of its path, never the whole path."""
    return f"image {image_id} ({_node_basename(_node_dirname(path))}/{_node_basename(path)})"


def detect_image_format(data: bytes) -> str | None:
    """"jpeg", "png" or "webp" from the file signature, or None when it is none of those."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == _PNG_SIGNATURE:
        return "png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A JPEG, PNG or WebP image as uint8 [H, W, 3] RGB; DataError INVALID_ARGUMENT when it cannot be decoded."""
    fmt = detect_image_format(data)
    if fmt is None:
        raise DataError("INVALID_ARGUMENT", f"image bytes ({len(data)}) are not a JPEG, PNG or WebP image")
    try:
        with Image.open(io.BytesIO(data), formats=[fmt.upper()]) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise DataError("INVALID_ARGUMENT", f"the {fmt} image exceeds the limit of {max_pixels} pixels")
            image.load()
            pixels = _to_rgb(ImageOps.exif_transpose(image))
    except DataError:
        raise
    except Image.DecompressionBombError as error:
        raise DataError("INVALID_ARGUMENT", f"the {fmt} image exceeds the limit of {max_pixels} pixels") from error
    except Exception as error:  # PIL reports corrupt data with OSError, SyntaxError, ValueError and others
        text = str(error).lower()
        what = "truncated" if any(word in text for word in _TRUNCATED_WORDS) else "corrupt"
        raise DataError("INVALID_ARGUMENT", f"the {fmt} image ({len(data)} bytes) is {what} and cannot be decoded") from error
    return pixels


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: keep the high byte, as libvips does going to 8-bit sRGB.
        grey = (np.asarray(image, dtype=np.uint32) >> 8).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


class ImageStore:
    """Decoded images by path, least recently used evicted first once they hold more than `memory_bytes`.

    `get` returns a read-only array shared with the cache. A missing file is DataError NOT_FOUND and an
    undecodable one INVALID_ARGUMENT, each naming the image by its label (see image_label); a read that takes
    longer than `read_timeout_s` is DEADLINE_EXCEEDED. One store per loader worker process: it is picklable
    (the cache is not carried along) and not meant to be shared between threads.
    """

    def __init__(self, memory_bytes: int = DEFAULT_IMAGE_MEMORY_BYTES, read_timeout_s: float = 30.0) -> None:
        if memory_bytes < 0:
            raise ValueError(f"memory_bytes must be >= 0, got {memory_bytes}")
        if not read_timeout_s > 0:
            raise ValueError(f"read_timeout_s must be positive, got {read_timeout_s}")
        self.memory_bytes = int(memory_bytes)
        self.read_timeout_s = float(read_timeout_s)
        self.stats = {"memory_hits": 0, "decoded": 0}
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self._memory_used = 0
        self._reader: concurrent.futures.ThreadPoolExecutor | None = None
        self._reader_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # A worker process starts with an empty cache and its own reader thread.
        return {"memory_bytes": self.memory_bytes, "read_timeout_s": self.read_timeout_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["memory_bytes"], state["read_timeout_s"])  # type: ignore[misc]

    @property
    def memory_used(self) -> int:
        """Bytes of decoded pixels held in memory."""
        return self._memory_used

    def get(self, path: str, label: str) -> np.ndarray:
        """The decoded image at `path` as uint8 [H, W, 3]; `label` names it in errors."""
        cached = self._memory.get(path)
        if cached is not None:
            self.stats["memory_hits"] += 1
            self._memory.move_to_end(path)
            return cached
        data = self._read(path, label)
        try:
            image = decode_image(data)
        except DataError as error:
            raise DataError(error.code, f"{label}: {error.message}") from error.__cause__
        image.setflags(write=False)
        self.stats["decoded"] += 1
        self._remember(path, image)
        return image

    def _read(self, path: str, label: str) -> bytes:
        with self._reader_lock:
            if self._reader is None:
                self._reader = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="image-read")
            reader = self._reader
        future = reader.submit(_read_file, path)
        try:
            return future.result(timeout=self.read_timeout_s)
        except concurrent.futures.TimeoutError as error:
            # The thread finishes the read in the background; a hung file system holds only that thread.
            reader.shutdown(wait=False)
            self._reader = None
            raise DataError("DEADLINE_EXCEEDED", f"{label} could not be read: operation timed out") from error
        except OSError as error:
            code, message = _ERRNO_CODES.get(error.errno or 0, ("INTERNAL", "internal error"))
            if code == "NOT_FOUND":
                raise DataError("NOT_FOUND", f"{label} not found") from error
            raise DataError(code, f"{label} could not be read: {message}") from error

    def _remember(self, path: str, image: np.ndarray) -> None:
        size = image.nbytes
        if size > self.memory_bytes:
            return
        self._memory[path] = image
        self._memory_used += size
        while self._memory_used > self.memory_bytes:
            _, evicted = self._memory.popitem(last=False)
            self._memory_used -= evicted.nbytes


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


__all__ = ["DataError", "DEFAULT_IMAGE_MEMORY_BYTES", "DEFAULT_MAX_PIXELS", "ImageStore", "decode_image",
           "detect_image_format", "image_label"]
