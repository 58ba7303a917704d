"""A stand-in for the PyTorch engine, without torch, for the trainer's failure tests.

It speaks services/trainer/pytorch/PROTOCOL.md with a made-up step (the loss is the learning rate times the
step count; the weights do not change) and misbehaves as FAKE_ENGINE_MODE says, at the request FAKE_ENGINE_AT
names (default "step"):
  ok               behaves
  silent           never says hello
  no-torch         hello with an error, exit 3
  die              a traceback on stderr, exit 1
  killed           SIGKILL itself
  garbage          a stray print on stdout
  hang             never answers
  error:<CODE>     an error answer with that code
  ignore-shutdown  answers bye but keeps running
FAKE_ENGINE_LAYOUT is the JSON of the `ready` answer's params and buffers.
"""
import json
import os
import signal
import struct
import sys
import time

out = sys.stdout.buffer
stdin = sys.stdin.buffer
mode = os.environ.get("FAKE_ENGINE_MODE", "ok")
at = os.environ.get("FAKE_ENGINE_AT", "step")


def send(message, tensors=()):
    if tensors:
        message["payload"] = [[name, "f32", shape] for name, shape, _ in tensors]
    out.write((json.dumps(message) + "\n").encode())
    for _, _, data in tensors:
        out.write(data)
    out.flush()


def count(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def read():
    line = stdin.readline()
    if not line:
        return None, {}
    message = json.loads(line)
    tensors = {}
    for name, _, shape in message.get("payload", []):
        tensors[name] = (shape, stdin.read(count(shape) * 4))
    return message, tensors


if mode == "silent":
    time.sleep(3600)
if mode == "no-torch":
    send({"type": "hello", "protocol": 1, "error": "torch cannot be imported: No module named 'torch'"})
    sys.exit(3)

send({"type": "hello", "protocol": 1, "torch": "0.0-fake", "python": "3", "cuda": {"available": False, "devices": []}, "bf16": True,
      "distributed": {"gloo": False, "nccl": False}})
state = {}
step = 0
micro = 0
accum = 1
while True:
    request, tensors = read()
    if request is None:
        sys.exit(0)
    kind, rid = request["type"], request["id"]
    if kind == at and mode != "ok":
        if mode == "die":
            sys.stderr.write("Traceback (most recent call last):\n  File \"/opt/engine/step.py\", line 3, in step\n"
                             "RuntimeError: CUDA error: an illegal memory access was encountered\n")
            sys.stderr.flush()
            sys.exit(1)
        if mode == "killed":
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "garbage":
            out.write(b"Epoch 1: loss went down, feeling good\n")
            out.flush()
            time.sleep(30)
        if mode == "hang":
            time.sleep(3600)
        if mode.startswith("error:"):
            code = mode.split(":", 1)[1]
            send({"type": "error", "id": rid, "code": code, "message": f"{code.lower()} says no"})
            continue
        if mode == "ignore-shutdown":
            send({"type": "bye", "id": rid})
            stdin.close()
            time.sleep(3600)
    if kind == "init":
        accum = request["training"]["gradAccumSteps"]
        layout = json.loads(os.environ["FAKE_ENGINE_LAYOUT"])
        send({"type": "ready", "id": rid, "device": request["device"], "amp": None, "worldSize": 1, **layout})
    elif kind == "set_state":
        state = tensors
        step, micro = request["step"], request["microStep"]
        send({"type": "ok", "id": rid})
    elif kind == "get_state":
        send({"type": "state", "id": rid, "step": step, "microStep": micro},
             [(name, shape, data) for name, (shape, data) in state.items()])
    elif kind == "get_weights":
        send({"type": "weights", "id": rid},
             [(name, shape, data) for name, (shape, data) in state.items() if name.startswith(("param:", "buffer:"))])
    elif kind == "step":
        micro += 1
        updated = micro == accum
        if updated:
            micro = 0
            step += 1
        first = struct.unpack("<f", tensors["images"][1][:4])[0]
        send({"type": "step_result", "id": rid, "loss": request["lr"] * step + first, "updated": updated,
              "gradNorm": 1.0 if updated else None, "step": step})
    elif kind == "shutdown":
        send({"type": "bye", "id": rid})
        sys.exit(0)
