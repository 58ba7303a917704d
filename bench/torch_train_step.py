"""PyTorch's CPU training step for the same models as bench/train-step.ts, measured in the same run.

Called by bench/train-step.ts with a JSON argument; prints one JSON line: median ms per training step (forward,
JointsMSE loss, backward, SGD update) and per forward-only pass. Uses the PyTorch engine's zoo
(services/trainer/pytorch/poseloop_torch/zoo.py), which matches libs/train's zoo layer for layer. Deconvolutions
run through nn.ConvTranspose2d's own kernel unless the spec sets "subpixel": true (the engine's CPU path, which
bench/train-step.ts sets: Debian's reference-BLAS build runs ConvTranspose2d ~30x slower than the identical
convolution + pixel shuffle, and a peer measured on its slow path flatters the other side).
"""
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "services", "trainer", "pytorch"))
from poseloop_torch import zoo  # noqa: E402


def median_ms(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return times[len(times) // 2]


def main():
    spec = json.loads(sys.argv[1])
    torch.set_num_threads(spec.get("threads", os.cpu_count()))
    torch.manual_seed(0)
    model = zoo.build_model(spec["model"])
    zoo.set_subpixel(model, spec.get("subpixel", False))
    b, h, w, k = spec["batch"], spec["model"]["inputHeight"], spec["model"]["inputWidth"], spec["model"]["numKeypoints"]
    stride = zoo.heatmap_stride(spec["model"])
    images = torch.randn(b, 3, h, w)
    targets = torch.rand(b, k, h // stride, w // stride)
    weights = torch.ones(b, k)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        optimizer.zero_grad()
        loss = zoo.joints_mse(model(images), targets, weights)
        loss.backward()
        optimizer.step()

    model.train()
    step_ms = median_ms(step, spec["reps"])
    model.eval()
    with torch.no_grad():
        forward_ms = median_ms(lambda: model(images), spec["reps"])
    print(json.dumps({"stepMs": step_ms, "forwardMs": forward_ms, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
