"""The PyTorch engine's data loader alone, for bench/engine-data.ts: poseloop_torch.data.loader.EngineDataLoader
building planned batches in `workers` worker processes, timed the way the TypeScript side times libs/data's
PoseDataLoader (warm-up epochs first, then whole epochs).

Usage: `python3 engine_data_loader.py <request.json>` where the file holds {"config": <the engine's `data`
config>, "workers": W, "prefetch": P, "warmUp": [plans], "timed": [plans]} and a plan is
{"epoch": e, "batches": [[index, [samples]], ...]}. Prints one JSON line: samples/s and the seconds of the first
batch (the workers' start).
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "services", "trainer", "pytorch"))
from poseloop_torch.data.loader import EngineDataLoader  # noqa: E402
from poseloop_torch.engine import resolve_image_path  # noqa: E402


def run_epoch(loader, plan):
    loader.start(plan["epoch"], [(index, samples) for index, samples in plan["batches"]])
    n = 0
    for index, _ in plan["batches"]:
        n += len(loader.next(plan["epoch"], index).images)
    return n


def main(path):
    with open(path) as f:
        request = json.load(f)
    config = request["config"]
    # As the engine resolves them: [root, relative path] against POSELOOP_DATA_ROOT, which the bench sets.
    config["table"]["imagePaths"] = [resolve_image_path(entry) for entry in config["table"]["imagePaths"]]
    batch = len(request["timed"][0]["batches"][0][1])
    with EngineDataLoader(config, request["workers"], request["prefetch"], [0], batch) as loader:
        started = time.perf_counter()
        first = request["warmUp"][0]
        loader.start(first["epoch"], [(index, samples) for index, samples in first["batches"]])
        loader.next(first["epoch"], first["batches"][0][0])
        first_batch_s = time.perf_counter() - started
        for plan in request["warmUp"]:
            run_epoch(loader, plan)
        started = time.perf_counter()
        samples = sum(run_epoch(loader, plan) for plan in request["timed"])
        seconds = time.perf_counter() - started
    print(json.dumps({"samplesPerSecond": samples / seconds, "firstBatchSeconds": first_batch_s}))


if __name__ == "__main__":
    main(sys.argv[1])
