"""PyTorch's CPU training step for the same models as bench/train-step.ts, measured in the same run.

Called by bench/train-step.ts with a JSON argument; prints one JSON line: median ms per training step (forward,
JointsMSE loss, backward, SGD update) and per forward-only pass. Uses the model definitions of the golden
fixtures (libs/train/fixtures/make_goldens.py), which match libs/train's zoo layer for layer.
"""
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "libs", "train", "fixtures"))
import make_goldens as zoo  # noqa: E402


def build(spec):
    arch = spec["architecture"]
    k = spec["numKeypoints"]
    if arch == "lite":
        return zoo.LitePose(spec.get("lite", {}).get("channels", [16, 32, 64]), k)
    if arch == "simplebaseline":
        sb = spec.get("simpleBaseline", {})
        return zoo.SimpleBaseline(sb.get("depth", 50), sb.get("baseWidth", 64), sb.get("deconvFilters", [256, 256, 256]), k)
    hr = spec.get("hrnet", {})
    return zoo.Hrnet(hr.get("width", 32), hr.get("stemWidth", 64), hr.get("stage1Planes", 64), k)


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
    model = build(spec["model"])
    b, h, w, k = spec["batch"], spec["model"]["inputHeight"], spec["model"]["inputWidth"], spec["model"]["numKeypoints"]
    images = torch.randn(b, 3, h, w)
    targets = torch.rand(b, k, h // 4, w // 4)
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
