"""The bare PyTorch training loop that bench/train-engines.ts measures the PyTorch engine against.

It is the engine's physical peer without the protocol: the engine's own model (poseloop_torch.zoo, with the
sub-pixel deconvolution the engine turns on for the CPU), its own optimizer construction (engine.make_optimizer:
torch.optim's single-tensor code), the same JointsMSE loss, batch and thread count, optional bf16 autocast the
way the engine applies it, and the very batches the engines get (raw float32 files written by the TypeScript
side), already in memory. A step is zero_grad, forward, loss, backward, optimizer step and the loss read back as
a float (what any loop reports); nothing else.

Usage: `python3 torch_bare_loop.py '<spec JSON>'`. It answers on stdout, one JSON line each: first `ready`
(torch version, threads, oneDNN state, the convolution kernels one profiled step ran), then for every stdin line
`{"steps": N}` the N steps' times in ms. With "initialWeights" in the spec it starts from the engine's weights. End of stdin ends it.
"""
import contextlib
import json
import os
import sys
import time
from typing import Any, ContextManager, Dict, List

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "services", "trainer", "pytorch"))
from poseloop_torch import engine, zoo  # noqa: E402

# Convolution entry points that only dispatch; what is left names the kernel that ran.
DISPATCH_OPS = {"aten::conv2d", "aten::convolution", "aten::_convolution", "aten::convolution_backward", "aten::conv_transpose2d"}


def load(path: str, shape: List[int]) -> torch.Tensor:
    return torch.from_numpy(np.fromfile(path, dtype="<f4").reshape(shape))


def load_weights(model: torch.nn.Module, path: str) -> None:
    """Copies the engine's starting weights (path.json: [[name, count]] in file order; path.f32: their values)
    into the model by name, so both start from the same point and train through the same numbers."""
    with open(f"{path}.json", encoding="utf-8") as index:
        names = json.load(index)
    values = np.fromfile(f"{path}.f32", dtype="<f4")
    targets = dict(model.named_parameters())
    targets.update(dict(model.named_buffers()))
    offset = 0
    with torch.no_grad():
        for name, count in names:
            target = targets[name]
            target.copy_(torch.from_numpy(values[offset : offset + count].copy()).reshape(target.shape))
            offset += count


def conv_kernels(step: Any) -> Dict[str, int]:
    """Runs `step` once under the profiler; how many times each convolution kernel ran."""
    with torch.autograd.profiler.profile() as prof:
        step()
    counts: Dict[str, int] = {}
    for event in prof.function_events:
        if "conv" in event.name and event.name not in DISPATCH_OPS:
            counts[event.name] = counts.get(event.name, 0) + 1
    return counts


def main() -> int:
    spec = json.loads(sys.argv[1])
    torch.set_num_threads(int(spec["threads"]))
    torch.manual_seed(0)
    config = spec["model"]
    model = zoo.build_model(config)
    zoo.set_subpixel(model, True)  # what the engine does on the CPU
    model.train()
    if spec.get("initialWeights"):
        load_weights(model, spec["initialWeights"])
    optimizer = engine.make_optimizer(list(model.parameters()), engine.resolve_optimizer(spec["optimizer"]))
    for group in optimizer.param_groups:
        group["lr"] = float(spec["lr"])

    b, k = int(spec["batch"]), int(config["numKeypoints"])
    h, w = int(config["inputHeight"]), int(config["inputWidth"])
    stride = zoo.heatmap_stride(config)
    batches = [
        (
            load(os.path.join(spec["dataDir"], f"images-{i}.f32"), [b, 3, h, w]),
            load(os.path.join(spec["dataDir"], f"targets-{i}.f32"), [b, k, h // stride, w // stride]),
            load(os.path.join(spec["dataDir"], f"weights-{i}.f32"), [b, k]),
        )
        for i in range(int(spec["batches"]))
    ]

    def autocast() -> ContextManager[Any]:
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16) if spec.get("bf16", False) else contextlib.nullcontext()

    taken = 0

    def step() -> float:
        nonlocal taken
        images, targets, weights = batches[taken % len(batches)]
        taken += 1
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            output = model(images)
        loss = zoo.joints_mse(output.float(), targets, weights)
        loss.backward()
        optimizer.step()
        return float(loss.item())

    kernels = conv_kernels(step)
    ready = {
        "type": "ready",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "mkldnn": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled),
        "convKernels": kernels,
    }
    print(json.dumps(ready), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        times = []
        loss = float("nan")
        for _ in range(int(json.loads(line)["steps"])):
            start = time.perf_counter()
            loss = step()
            times.append((time.perf_counter() - start) * 1000)
        print(json.dumps({"type": "times", "ms": times, "loss": loss}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
