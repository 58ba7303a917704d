"""libs/core's SeededRandom (xoshiro128** seeded through splitmix32) and libs/data's epoch order, in Python.

The TypeScript loader draws every augmentation and every epoch's sample order from this generator, so the
Python loader must draw the same numbers: state words are kept as Python ints masked to 32 bits and every
step does what the JavaScript does (`Math.imul`, `>>>`, `| 0`, float64 arithmetic in the same order).
`next_uint32`, `next`, `uniform`, `int`, `chance`, `pick`, `weighted_index` and the epoch order are the
TypeScript's bit for bit. `normal` and `normal_paired` consume the same draws but call the platform's
`log`/`cos`/`sin`, which V8 computes with fdlibm: about one value in ten differs from V8's in its last bit.

Also here, for the ports beside it: `js_number_string` (JavaScript's `String(number)`, so error messages read
as the TypeScript's), `js_min`, `js_max` and `js_round` (Math.min, Math.max, Math.round).
"""
from __future__ import annotations

import builtins
import math
from decimal import Decimal
from typing import Sequence, TypeVar

import numpy as np

_MASK = 0xFFFFFFFF
_MAX_SAFE_INTEGER = 2**53 - 1

# Random streams of a loader seed (libs/data/src/epoch-order.ts): one for the sample order, one for
# augmentation, never overlapping.
ORDER_STREAM = 0x4F524452
AUGMENT_STREAM = 0x41554721

T = TypeVar("T")


def js_number_string(value: float) -> str:
    """JavaScript's `String(value)` for a number: "2" not "2.0", "1e-7", "Infinity", "NaN"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        value = float(value) if abs(value) > _MAX_SAFE_INTEGER else value
        if isinstance(value, int):
            return str(value)
    v = float(value)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    if v == 0:
        return "0"
    # repr gives the shortest digits that round-trip, as ECMAScript's Number::toString does; only the layout differs.
    sign = "-" if v < 0 else ""
    _, digit_tuple, exponent = Decimal(repr(abs(v))).as_tuple()
    digits = "".join(str(d) for d in digit_tuple).rstrip("0") or "0"
    assert isinstance(exponent, int)
    k = len(digits)
    n = exponent + len(digit_tuple)  # the decimal point sits after n digits
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        text = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if e >= 0 else "-") + str(abs(e))
    return sign + text


def to_uint32(value: float) -> int:
    """ECMAScript ToUint32 (`value >>> 0`)."""
    if isinstance(value, int):
        return value & _MASK
    v = float(value)
    if not math.isfinite(v):
        return 0
    return int(v) & _MASK  # int() truncates toward zero, as ToUint32 does before taking the modulus


def to_int32(value: float) -> int:
    """ECMAScript ToInt32 (`value | 0`)."""
    u = to_uint32(value)
    return u - 0x1_0000_0000 if u & 0x8000_0000 else u


def _imul(a: int, b: int) -> int:
    return (a * b) & _MASK


def _splitmix32(state: int) -> tuple[int, int]:
    """One step of splitmix32 on uint32 words: (next state, output)."""
    nxt = (state + 0x9E3779B9) & _MASK
    z = nxt
    z = _imul(z ^ (z >> 16), 0x85EBCA6B)
    z = _imul(z ^ (z >> 13), 0xC2B2AE35)
    return nxt, (z ^ (z >> 16)) & _MASK


def _splitmix_words(state: int) -> tuple[int, int, int, int]:
    words = []
    for _ in range(4):
        state, out = _splitmix32(state)
        words.append(out)
    return words[0], words[1], words[2], words[3]


def _is_safe_integer(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) <= _MAX_SAFE_INTEGER
    if isinstance(value, float):
        return math.isfinite(value) and value.is_integer() and abs(value) <= _MAX_SAFE_INTEGER
    return False


def js_min(a: float, b: float) -> float:
    """Math.min of two numbers: NaN wins, -0 beats +0."""
    if a != a or b != b:
        return math.nan
    if a == b == 0:
        return a if math.copysign(1.0, a) < 0 else b
    return a if a < b else b


def js_max(a: float, b: float) -> float:
    """Math.max of two numbers: NaN wins, +0 beats -0."""
    if a != a or b != b:
        return math.nan
    if a == b == 0:
        return b if math.copysign(1.0, a) < 0 else a
    return a if a > b else b


def js_round(value: float) -> float:
    """Math.round: the nearest integer, halves toward +infinity (Python's round takes halves to even)."""
    if not math.isfinite(value):
        return value
    floor = math.floor(value)
    return float(floor + 1 if value - floor >= 0.5 else floor)


class SeededRandom:
    """A deterministic pseudo-random generator whose draws equal libs/core's SeededRandom for the same seeding.

    `SeededRandom(seed, *streams)` hashes every number (datasets, augmentation); `from_seed32(seed)` takes
    splitmix32's first four outputs from the seed itself (libs/train's stream). Not for cryptography.
    """

    __slots__ = ("_s0", "_s1", "_s2", "_s3", "_spare")

    def __init__(self, seed: builtins.int, *streams: builtins.int) -> None:
        values = (seed, *streams)
        for value in values:
            if not _is_safe_integer(value):
                shown = js_number_string(value) if isinstance(value, (int, float)) else str(value)
                raise ValueError(f"a random seed must be a safe integer, got {shown}")
        # Hash-chain both 32-bit halves of every number into the state, so nearby seeds and streams diverge at once.
        state = 0x2545F491
        for value in values:
            v = int(value)
            for word in (v & _MASK, (v >> 32) & _MASK):
                state = _splitmix32(state ^ word)[1]
        self._s0, self._s1, self._s2, self._s3 = _splitmix_words(state)
        # The all-zero state is xoshiro's only fixed point.
        if (self._s0 | self._s1 | self._s2 | self._s3) == 0:
            self._s0 = 1
        self._spare: float | None = None

    @staticmethod
    def from_seed32(seed: builtins.int) -> SeededRandom:
        """The generator whose state is splitmix32's first four outputs from `seed` (modulo 2^32)."""
        return SeededRandom.from_state(_splitmix_words(to_uint32(seed)))

    @staticmethod
    def from_state(state: Sequence[builtins.int]) -> SeededRandom:
        """A generator continuing from `state` (four 32-bit words, a checkpoint's)."""
        random = SeededRandom(0)
        random._restore_state(state)
        return random

    @property
    def state(self) -> tuple[builtins.int, builtins.int, builtins.int, builtins.int]:
        """The state as four unsigned 32-bit words."""
        return self._s0, self._s1, self._s2, self._s3

    def _restore_state(self, state: Sequence[builtins.int]) -> None:
        self._s0, self._s1, self._s2, self._s3 = (to_uint32(word) for word in state)
        self._spare = None

    def derive(self, stream: builtins.int) -> SeededRandom:
        """An independent generator for sub-stream `stream`, leaving this one untouched."""
        # The TypeScript keeps the words as int32, so the seed it hashes here can be negative.
        return SeededRandom(to_int32(self._s0 ^ self._s2), to_int32(self._s1 ^ self._s3), stream)

    def next_uint32(self) -> builtins.int:
        """The next 32 random bits as an unsigned integer."""
        s0, s1, s2, s3 = self._s0, self._s1, self._s2, self._s3
        x = (s1 * 5) & _MASK
        x = ((x << 7) | (x >> 25)) & _MASK
        result = (x * 9) & _MASK
        t = (s1 << 9) & _MASK
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = ((s3 << 11) | (s3 >> 21)) & _MASK
        self._s0, self._s1, self._s2, self._s3 = s0, s1, s2, s3
        return result

    def next_uint32_array(self, count: builtins.int) -> np.ndarray:
        """The next `count` values of `next_uint32` (uint32), the same draws as `count` calls."""
        s0, s1, s2, s3 = self._s0, self._s1, self._s2, self._s3
        out = [0] * count
        mask = _MASK
        for i in range(count):
            x = (s1 * 5) & mask
            out[i] = ((((x << 7) | (x >> 25)) & mask) * 9) & mask
            t = (s1 << 9) & mask
            s2 ^= s0
            s3 ^= s1
            s1 ^= s2
            s0 ^= s3
            s2 ^= t
            s3 = ((s3 << 11) | (s3 >> 21)) & mask
        self._s0, self._s1, self._s2, self._s3 = s0, s1, s2, s3
        return np.array(out, dtype=np.uint32)

    def next(self) -> float:
        """Uniform in [0, 1)."""
        return self.next_uint32() / 4294967296

    def uniform(self, min: float = 0, max: float = 1) -> float:  # noqa: A002 - the TypeScript's parameter names
        """Uniform in [min, max)."""
        return min + (max - min) * self.next()

    def int(self, min: builtins.int, max: builtins.int) -> builtins.int:  # noqa: A002, A003
        """A uniform integer in [min, max], both included."""
        return min + math.floor(self.next() * (max - min + 1))

    def ints(self, min: builtins.int, max: builtins.int, count: builtins.int) -> np.ndarray:  # noqa: A002
        """The next `count` values of `int(min, max)` as float64 (the same draws and arithmetic, vectorized)."""
        u = self.next_uint32_array(count).astype(np.float64) / 4294967296
        return min + np.floor(u * (max - min + 1))

    def chance(self, p: float) -> bool:
        """True with probability p."""
        return self.next() < p

    def normal(self, mean: float = 0, sd: float = 1) -> float:
        """Normally distributed: one Box–Muller value per two draws (the datasets' stream)."""
        u = 1 - self.next()
        v = self.next()
        return mean + sd * math.sqrt(-2 * math.log(u)) * math.cos(2 * math.pi * v)

    def normal_paired(self) -> float:
        """Standard normal from Box–Muller with both values of each pair used, the second on the next call."""
        if self._spare is not None:
            spare = self._spare
            self._spare = None
            return spare
        u = self.next()
        while u <= 2.220446049250313e-16:  # Number.EPSILON
            u = self.next()
        v = self.next()
        radius = math.sqrt(-2 * math.log(u))
        self._spare = radius * math.sin(2 * math.pi * v)
        return radius * math.cos(2 * math.pi * v)

    def pick(self, items: Sequence[T]) -> T:
        """One element, uniformly."""
        if len(items) == 0:
            raise ValueError("cannot pick from an empty list")
        return items[math.floor(self.next() * len(items))]

    def weighted_index(self, weights: Sequence[float]) -> builtins.int:
        """An index chosen with probability proportional to its weight."""
        total: float = 0
        for w in weights:
            total = total + js_max(0, w)
        r = self.next() * total
        for i, w in enumerate(weights):
            r -= js_max(0, w)
            if r < 0:
                return i
        return len(weights) - 1


def batch_count(count: int, batch_size: int, drop_last: bool) -> int:
    """Batches in an epoch of `count` samples: the last partial batch is dropped or kept."""
    return count // batch_size if drop_last else -(-count // batch_size)


def epoch_order(count: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The sample order of one epoch (int32): 0..count−1, Fisher–Yates shuffled from (seed, epoch) when `shuffle`."""
    if not _is_safe_integer(epoch) or epoch < 0:
        shown = js_number_string(epoch) if isinstance(epoch, (int, float)) else str(epoch)
        raise ValueError(f"epoch must be an integer >= 0, got {shown}")
    if not shuffle:
        return np.arange(count, dtype=np.int32)
    random = SeededRandom(seed, ORDER_STREAM, int(epoch))
    # Draw i (for i = count−1 … 1) is int(0, i); the draws do not depend on the swaps, so they are vectorized.
    u = random.next_uint32_array(count - 1).astype(np.float64) / 4294967296
    bounds = np.arange(count, 1, -1, dtype=np.float64)
    picks = np.floor(u * bounds).astype(np.int64).tolist()
    order = list(range(count))
    for i, j in zip(range(count - 1, 0, -1), picks):
        order[i], order[j] = order[j], order[i]
    return np.array(order, dtype=np.int32)
