"""Framing of PROTOCOL.md: one JSON line per message, then the raw little-endian float32 bytes of the tensors
its `payload` lists. Imports numpy only, so the hello line can still be written when torch is missing."""
import json
import os
import sys

import numpy as np

PROTOCOL_VERSION = 1
DTYPES = {"f32": np.dtype("<f4")}


class ProtocolError(Exception):
    """A request that is not a well-formed message; `fatal` when the stream cannot be resynchronized."""

    def __init__(self, message, fatal=False):
        super().__init__(message)
        self.fatal = fatal


def claim_stdout():
    """Keeps the real stdout for the protocol and sends everything else that writes to stdout (print, C
    libraries writing to fd 1) to stderr. Returns the protocol's binary output stream."""
    sys.stdout.flush()
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(fd, "wb", buffering=0)


def write_message(out, message, tensors=()):
    """Writes `message` and the tensors [(name, array)] as its payload. Non-finite floats go out as Python's
    json writes them (NaN, Infinity), which the trainer's reader accepts."""
    arrays = [(name, np.ascontiguousarray(np.asarray(value), dtype="<f4")) for name, value in tensors]
    if arrays:
        message = {**message, "payload": [[name, "f32", list(array.shape)] for name, array in arrays]}
    chunks = [json.dumps(message, separators=(",", ":")).encode() + b"\n"]
    chunks += [array.tobytes() for _, array in arrays]
    # One write per message: a message is never interleaved with anything.
    out.write(b"".join(chunks))
    out.flush()


def read_exact(inp, count):
    """Up to `count` bytes (fewer at the end of the stream), in a writable buffer torch can use in place."""
    data = bytearray(count)
    view = memoryview(data)
    got = 0
    while got < count:
        n = inp.readinto(view[got:])
        if not n:
            break
        got += n
    return data if got == count else data[:got]


def read_message(inp):
    """The next request as (message, {name: float32 array}), or None at the end of the stream. A line that is
    not a JSON object raises ProtocolError (the stream continues at the next line); a payload that is invalid
    or cut short raises a fatal one (its bytes cannot be skipped reliably)."""
    line = inp.readline()
    if not line:
        return None
    try:
        message = json.loads(line)
    except ValueError:
        raise ProtocolError(f"not a JSON line: {line[:120]!r}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"not a JSON object: {line[:120]!r}")
    payload = message.get("payload", [])
    tensors = {}
    if not isinstance(payload, list):
        raise ProtocolError("payload must be a list of [name, dtype, shape]", fatal=True)
    for entry in payload:
        if not (
            isinstance(entry, list)
            and len(entry) == 3
            and isinstance(entry[0], str)
            and entry[1] in DTYPES
            and isinstance(entry[2], list)
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in entry[2])
        ):
            raise ProtocolError(f"invalid payload entry {json.dumps(entry)[:120]} (want [name, \"f32\", [dims]])", fatal=True)
        name, dtype, shape = entry
        dtype = DTYPES[dtype]
        count = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        data = read_exact(inp, count)
        if len(data) < count:
            raise ProtocolError(f"tensor {name} announced {count} bytes, the stream ended after {len(data)}", fatal=True)
        tensors[name] = np.frombuffer(data, dtype=dtype).reshape(shape)
    return message, tensors
