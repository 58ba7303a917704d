"""Drives the engine as the trainer does: a child process speaking PROTOCOL.md over its stdin and stdout."""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class EngineProcess:
    def __init__(self, args=(), env=None, nproc=None):
        path = os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")) if p)
        environment = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **(env or {})}
        if nproc is None:
            command = [sys.executable, "-m", "poseloop_torch", *args]
        else:
            # poseloop_torch.torchrun is torchrun with torch 1.13's Python 3.11 bug worked around (see there).
            command = [sys.executable, "-m", "poseloop_torch.torchrun", "--standalone", "--nproc_per_node", str(nproc), "-m", "poseloop_torch", *args]
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(command, cwd=PACKAGE_ROOT, env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr)
        self.next_id = 1
        self.hello = self.read()[0]

    def send(self, message, tensors=None):
        tensors = tensors or {}
        arrays = [(name, np.ascontiguousarray(value, dtype="<f4")) for name, value in tensors.items()]
        if arrays:
            message = {**message, "payload": [[name, "f32", list(a.shape)] for name, a in arrays]}
        self.proc.stdin.write(json.dumps(message).encode() + b"\n" + b"".join(a.tobytes() for _, a in arrays))
        self.proc.stdin.flush()

    def read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise EOFError(f"the engine closed stdout; stderr:\n{self.stderr_text()[-3000:]}")
        message = json.loads(line)
        tensors = {}
        for name, dtype, shape in message.get("payload", []):
            assert dtype == "f32"
            count = int(np.prod(shape, dtype=np.int64)) * 4
            tensors[name] = np.frombuffer(self.proc.stdout.read(count), dtype="<f4").reshape(shape)
        return message, tensors

    def request(self, kind, tensors=None, **fields):
        rid = self.next_id
        self.next_id += 1
        self.send({"type": kind, "id": rid, **fields}, tensors)
        message, out = self.read()
        assert message.get("id") == rid, message
        return message, out

    def call(self, kind, tensors=None, **fields):
        """request() that fails on an error answer."""
        message, out = self.request(kind, tensors, **fields)
        if message["type"] == "error":
            raise AssertionError(f"{kind}: {message}\nstderr:\n{self.stderr_text()[-3000:]}")
        return message, out

    def stderr_text(self):
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def close(self, timeout=60):
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            return self.proc.wait(timeout)
        finally:
            self.proc.stdout.close()
            self.stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None and exc[0] is not None:
            self.proc.kill()
        self.close()


def read_golden(path):
    """A libs/train golden archive (format: libs/train/fixtures/make_goldens.py) as (tensors, meta)."""
    with open(path, "rb") as f:
        data = f.read()
    length = int.from_bytes(data[:4], "little")
    header = json.loads(data[4 : 4 + length])
    offset = (length + 4 + 3) // 4 * 4
    tensors = {}
    for name, shape in header["tensors"]:
        count = int(np.prod(shape, dtype=np.int64))
        tensors[name] = np.frombuffer(data, dtype="<f4", count=count, offset=offset).reshape(shape)
        offset += count * 4
    return tensors, header["meta"]
