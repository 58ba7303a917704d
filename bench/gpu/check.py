"""The PyTorch engine's GPU checks and benchmark, as one command for a GPU machine with Python and PyTorch but no
Node (bench/gpu/run.sh calls it). Everything goes through the engine's line protocol (PROTOCOL.md), as the
trainer drives it, and every batch is built by the engine's own data code from the dataset that
bench/gpu/prepare.ts wrote.

Checks (each "pass", "fail" or "not run" with the reason and its numbers):
- amp: fp32 and fp16 autocast + GradScaler + channels_last train from the same weights on the same batches;
  the mixed-precision run stays finite, reports its loss scale and follows the fp32 loss curve.
- resume: with TRAIN.DETERMINISTIC a run cut after half its steps (get_state, a new engine process, set_state)
  ends where the uninterrupted run ends.
- oom: with the GPU filled by another process, a step runs out of memory for real; the job's answer is
  OUT_OF_MEMORY with the advice, the engine still hands out its state, and once memory is free the same step
  trains: nothing hangs, nothing is lost.
- ddp: two ranks on two GPUs over NCCL against one process: two replicas without SyncBatchNorm, one replica of
  the whole batch with it (needs two GPUs).
- speed: HRNet-W32 256x192, batch 32, AMP + channels_last: samples/s of a bare PyTorch loop (batches already
  on the GPU, the engine's model, loss and optimizer, cuDNN autotuning, multi-tensor Adam) against the engine
  fed over its pipe (the trainer's loader) and the engine loading its own batches (TRAIN.DATA_LOADER engine),
  and the engine's loader alone.

On a machine without CUDA it runs the same code on the CPU with bf16 autocast and tiny settings (--quick), which
checks the script, not the GPU. Usage: `python3 bench/gpu/check.py --data .gpu-check --out REPORT_DIR [--quick]`.
Writes REPORT_DIR/gpu-check.json and prints a summary.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np
import torch

ENGINE_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "services", "trainer", "pytorch")
sys.path.insert(0, ENGINE_ROOT)
from poseloop_torch import engine as engine_module, protocol, zoo  # noqa: E402
from poseloop_torch.data.batch import TopDownBatchBuilder  # noqa: E402
from poseloop_torch.data.loader import EngineDataLoader  # noqa: E402
from poseloop_torch.data.seeded_random import epoch_order  # noqa: E402

K = 17
HRNET = {"architecture": "hrnet", "inputWidth": 192, "inputHeight": 256, "numKeypoints": K, "hrnet": {"width": 32}}
RESNET18 = {"architecture": "simplebaseline", "inputWidth": 192, "inputHeight": 256, "numKeypoints": K, "simpleBaseline": {"depth": 18}}
# The CPU stand-in (--quick): the same input and heatmap sizes, a net small enough for two cores.
LITE = {"architecture": "lite", "inputWidth": 192, "inputHeight": 256, "numKeypoints": K, "lite": {"channels": [8, 16, 16]}}
ADAM = {"kind": "adam"}
LR = 1e-3


class Engine:
    """`python3 -m poseloop_torch` (or under torchrun) spoken to over PROTOCOL.md."""

    def __init__(self, data_root, nproc=None, env=None):
        path = os.pathsep.join(p for p in (ENGINE_ROOT, os.environ.get("PYTHONPATH", "")) if p)
        environment = {**os.environ, "PYTHONPATH": path, "POSELOOP_DATA_ROOT": data_root, **(env or {})}
        command = [sys.executable, "-m", "poseloop_torch"]
        if nproc is not None:
            command = [sys.executable, "-m", "poseloop_torch.torchrun", "--standalone", "--nproc_per_node", str(nproc), "-m", "poseloop_torch"]
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(command, cwd=ENGINE_ROOT, env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr)
        self.next_id = 1
        self.hello, _ = self._read()

    def _read(self):
        got = protocol.read_message(self.proc.stdout)
        if got is None:
            raise RuntimeError(f"the engine closed its output; stderr:\n{self.stderr_tail()}")
        return got

    def request(self, kind, tensors=(), **fields):
        rid = self.next_id
        self.next_id += 1
        protocol.write_message(self.proc.stdin, {"type": kind, "id": rid, **fields}, list(tensors))
        message, out = self._read()
        if message.get("id") != rid:
            raise RuntimeError(f"answer {message} to request {rid}")
        return message, out

    def call(self, kind, tensors=(), **fields):
        message, out = self.request(kind, tensors, **fields)
        if message["type"] == "error":
            raise RuntimeError(f"{kind}: {message['code']}: {message['message']}\nstderr:\n{self.stderr_tail()}")
        return message, out

    def stderr_tail(self, chars=3000):
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-chars:]

    def close(self):
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Data:
    """The prepared dataset: the engine's `data` config with paths relative to the data root, and batches of
    it built here by the engine's own TopDownBatchBuilder (the bytes the engine's loader would build)."""

    def __init__(self, root):
        self.root = os.path.abspath(root)
        with open(os.path.join(self.root, "data-request.json"), encoding="utf-8") as f:
            self.config = json.load(f)["config"]
        self.count = self.config["table"]["count"]
        local = dict(self.config)
        local["table"] = {**self.config["table"], "imagePaths": [os.path.join(self.root, path) for _, path in self.config["table"]["imagePaths"]]}
        self.builder = TopDownBatchBuilder(local)

    def plan(self, epoch, batch):
        order = epoch_order(self.count, self.config["seed"], epoch, True)
        return [[i, [int(s) for s in order[i * batch : (i + 1) * batch]]] for i in range(self.count // batch)]

    def batches(self, batch, count, epoch=0):
        """`count` built batches of the plan of `epoch` (wrapping into the next epochs)."""
        out = []
        while len(out) < count:
            for index, samples in self.plan(epoch, batch)[: count - len(out)]:
                built = self.builder.build(epoch, index, samples)
                out.append({"images": built.images, "targets": built.targets, "target_weights": built.target_weights})
            epoch += 1
        return out


def tensors_of(batch):
    return [(name, batch[name]) for name in ("images", "targets", "target_weights")]


def init(e, model, batch, device, amp, channels_last=False, deterministic=False, replicas=1, sync_bn=False, threads=0, accumulate=1):
    training = {"batchSize": batch, "gradAccumSteps": accumulate, "clipGradNorm": 0, "optimizer": ADAM}
    ready, _ = e.call("init", model=model, training=training, device=device, amp=amp, channelsLast=channels_last, deterministic=deterministic, replicas=replicas, syncBatchNorm=sync_bn, threads=threads)
    return ready


def finite(values):
    return all(np.isfinite(v) for v in values)


# --- the checks -------------------------------------------------------------------------------------------


def check_amp(ctx):
    model, batch, steps = ctx["small"], ctx["batch"], ctx["amp_steps"]
    batches = ctx["data"].batches(batch, steps)
    runs = {}
    start = None
    for label, amp, channels_last in (("fp32", False, False), ("amp", True, True)):
        with Engine(ctx["data"].root) as e:
            ready = init(e, model, batch, ctx["device"], amp, channels_last)
            if start is None:
                _, start = e.call("get_weights")
            e.call("set_state", list(start.items()), step=0, microStep=0)
            results = [e.call("step", tensors_of(b), lr=LR)[0] for b in batches]
            runs[label] = {"ready": {k: ready[k] for k in ("device", "amp")}, "losses": [r["loss"] for r in results], "lossScale": [r.get("lossScale") for r in results], "skipped": sum(bool(r.get("skipped")) for r in results)}
    fp32, amp = runs["fp32"]["losses"], runs["amp"]["losses"]
    tail = max(1, steps // 5)
    gap = abs(statistics.mean(amp[-tail:]) - statistics.mean(fp32[-tail:])) / statistics.mean(fp32[-tail:])
    want_amp = "fp16" if ctx["cuda"] else "bf16"
    problems = []
    if runs["amp"]["ready"]["amp"] != want_amp:
        problems.append(f"the engine ran amp as {runs['amp']['ready']['amp']}, not {want_amp}")
    if not finite(amp):
        problems.append("a mixed-precision loss is not finite")
    if ctx["cuda"] and any(s is None for s in runs["amp"]["lossScale"]):
        problems.append("a fp16 step reported no loss scale")
    if gap > 0.15:
        problems.append(f"the mixed-precision loss ends {gap:.1%} away from fp32's (limit 15%)")
    if statistics.mean(fp32[-tail:]) < statistics.mean(fp32[:tail]) and not statistics.mean(amp[-tail:]) < statistics.mean(amp[:tail]):
        problems.append("the fp32 loss went down, the mixed-precision loss did not")
    return {"status": "fail" if problems else "pass", "problems": problems, "model": model["architecture"], "batch": batch, "steps": steps, "relativeGapAtEnd": gap, **runs}


def check_resume(ctx):
    """Two micro-batches an update and the cut after an odd number of steps: the state carries half an
    accumulation cycle, kept unscaled and scaled again by the restored loss scale (fp16 starts at 2^16 and
    usually halves in its first steps, so a wrong scale shows)."""
    model, batch, steps = ctx["small"], ctx["batch"], ctx["resume_steps"]
    batches = ctx["data"].batches(batch, steps)
    half = steps // 2 - 1

    with Engine(ctx["data"].root) as e:
        init(e, model, batch, ctx["device"], True, ctx["cuda"], deterministic=True, accumulate=2)
        _, start = e.call("get_weights")

    def run(parts):
        losses, state, fields = [], start, {"step": 0, "microStep": 0}
        for part in parts:
            with Engine(ctx["data"].root) as e:
                init(e, model, batch, ctx["device"], True, ctx["cuda"], deterministic=True, accumulate=2)
                e.call("set_state", list(state.items()), **fields)
                losses += [e.call("step", tensors_of(b), lr=LR)[0]["loss"] for b in batches[part[0] : part[1]]]
                message, state = e.call("get_state")
                fields = {k: message[k] for k in ("step", "microStep", "lossScaler") if k in message}
        return losses, state, fields

    straight, straight_state, straight_fields = run([(0, steps)])
    resumed, resumed_state, resumed_fields = run([(0, half), (half, steps)])
    worst = max(float(np.max(np.abs(straight_state[n].astype(np.float64) - resumed_state[n]))) for n in straight_state)
    identical = straight == resumed and worst == 0.0 and straight_fields == resumed_fields
    return {
        "status": "pass" if identical else "fail",
        "problems": [] if identical else [f"the resumed run differs: max |Δ| {worst:g} over the state, losses {straight} vs {resumed}"],
        "steps": steps,
        "cutAfter": half,
        "bitIdentical": identical,
        "maxStateDifference": worst,
        "lossScaler": straight_fields.get("lossScaler"),
    }


HOG = r"""
import sys, torch
free, total = torch.cuda.mem_get_info()
leave = int(sys.argv[1])
block = torch.empty(max(0, free - leave), dtype=torch.uint8, device="cuda")
print(free - leave, total, flush=True)
sys.stdin.read()
"""


def check_oom(ctx):
    if not ctx["cuda"]:
        return {"status": "not run", "problems": [], "why": "no CUDA device: a real out-of-memory needs one (the CPU path is tested in CI with an injected error)"}
    leave = 4 << 30
    hog = subprocess.Popen([sys.executable, "-c", HOG, str(leave)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    held = hog.stdout.readline().split()
    problems = []
    # HRNet-W32's activations for 128 crops in fp16 take several times the 4 GiB left.
    batch = 128
    batches = ctx["data"].batches(batch, 1)
    try:
        with Engine(ctx["data"].root) as e:
            init(e, HRNET, batch, ctx["device"], True, True)
            started = time.perf_counter()
            message, _ = e.request("step", tensors_of(batches[0]), lr=LR)
            oom_seconds = time.perf_counter() - started
            if message["type"] != "error" or message.get("code") != engine_module.OUT_OF_MEMORY:
                problems.append(f"the step with {leave >> 30} GiB left answered {message}, not OUT_OF_MEMORY")
            elif "BATCH_SIZE_PER_GPU" not in message["message"] or "GRAD_ACCUM_STEPS" not in message["message"] or "AMP" not in message["message"]:
                problems.append(f"the out-of-memory answer lacks the advice: {message['message']}")
            state_message, state = e.request("get_state")
            if state_message["type"] != "state" or state_message.get("step") != 0:
                problems.append(f"get_state after the out-of-memory answered {state_message}")
            hog.stdin.close()
            hog.wait(60)
            after, _ = e.request("step", tensors_of(batches[0]), lr=LR)
            if after["type"] != "step_result" or not np.isfinite(after["loss"]) or after["step"] != 1:
                problems.append(f"with the memory back, the same step answered {after}")
    finally:
        if hog.poll() is None:
            hog.kill()
    return {
        "status": "fail" if problems else "pass",
        "problems": problems,
        "heldByOtherProcessBytes": int(held[0]) if held else None,
        "gpuBytes": int(held[1]) if len(held) > 1 else None,
        "model": "hrnet-w32 256x192",
        "batch": batch,
        "answer": message,
        "answerSeconds": oom_seconds,
        "stateTensors": len(state),
        "stepAfterwards": {k: after.get(k) for k in ("type", "loss", "step", "lossScale")},
    }


def check_ddp(ctx):
    """Two ranks (torchrun, one GPU each, NCCL) against one process: without SyncBatchNorm they equal one process
    with two replicas (BatchNorm per replica, gradients averaged); with it, one process with one replica of the
    whole batch (BatchNorm over both ranks' samples). Without CUDA, with --quick, the first pair over gloo (the
    script's own check; CI tests that pair in test_ddp)."""
    gpus = torch.cuda.device_count() if ctx["cuda"] else 0
    if gpus < 2 and not (ctx["quick"] and not ctx["cuda"]):
        return {"status": "not run", "problems": [], "why": f"{gpus} GPU(s): NCCL DDP needs one GPU per rank (NCCL refuses two ranks on one GPU)"}
    model, batch, steps = ctx["small"], ctx["batch"] // 2, 6
    batches = ctx["data"].batches(batch * 2, steps)
    with Engine(ctx["data"].root) as e:
        init(e, model, batch, ctx["device"], False)
        _, start = e.call("get_weights")

    def losses(nproc, replicas, sync_bn):
        with Engine(ctx["data"].root, nproc=nproc) as e:
            init(e, model, batch * 2 // replicas, ctx["device"], False, deterministic=True, replicas=replicas, sync_bn=sync_bn)
            e.call("set_state", list(start.items()), step=0, microStep=0)
            return [e.call("step", tensors_of(b), lr=LR)[0]["loss"] for b in batches]

    pairs = {"2 ranks = 1 process, 2 replicas": (losses(2, 2, False), losses(None, 2, False))}
    if ctx["cuda"]:
        pairs["2 ranks with SyncBatchNorm = 1 process, 1 replica of both blocks"] = (losses(2, 2, True), losses(None, 1, False))
    # cuDNN may run float32 convolutions as TF32 and picks its algorithms per batch shape: agreement to 1e-2
    # relative, where the CPU (gloo) test holds 2e-6.
    worst = {label: max(abs(x - y) / abs(y) for x, y in zip(a, b)) for label, (a, b) in pairs.items()}
    problems = [f"{label}: losses {pairs[label][0]} vs {pairs[label][1]}" for label, w in worst.items() if not w < 1e-2]
    return {"status": "fail" if problems else "pass", "problems": problems, "gpus": gpus, "backend": "nccl" if ctx["cuda"] else "gloo", "losses": {k: {"ranks": a, "one process": b} for k, (a, b) in pairs.items()}, "maxRelativeLossDifference": worst}


def bare_loop(ctx, model_config, batches, warmup, timed):
    """The bare PyTorch loop at its best on this device: batches already on it, cuDNN autotuning, channels_last
    and fp16 autocast + GradScaler on CUDA (bf16 autocast on the CPU), torch's default (multi-tensor) Adam."""
    device = torch.device(ctx["device"])
    cuda = device.type == "cuda"
    torch.backends.cudnn.benchmark = cuda
    model = zoo.build_model(model_config)
    zoo.set_subpixel(model, not cuda)
    fmt = torch.channels_last if cuda else torch.contiguous_format
    model = model.to(device, memory_format=fmt).train()
    optimizer = engine_module.make_optimizer(list(model.parameters()), engine_module.resolve_optimizer(ADAM), single_tensor=not cuda)
    for group in optimizer.param_groups:
        group["lr"] = LR
    scaler = torch.amp.GradScaler("cuda") if cuda else None
    dtype = torch.float16 if cuda else torch.bfloat16
    on_device = [
        (torch.from_numpy(b["images"]).to(device).contiguous(memory_format=fmt), torch.from_numpy(b["targets"]).to(device), torch.from_numpy(b["target_weights"]).to(device))
        for b in batches
    ]

    def step(i):
        images, targets, weights = on_device[i % len(on_device)]
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=dtype):
            output = model(images)
        loss = zoo.joints_mse(output.float(), targets, weights)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return float(loss.item())

    for i in range(warmup):
        step(i)
    started = time.perf_counter()
    for i in range(timed):
        step(warmup + i)
    seconds = time.perf_counter() - started
    del model, optimizer, on_device
    if cuda:
        torch.cuda.empty_cache()
    return timed / seconds


def engine_over_pipe(ctx, model_config, batches, warmup, timed):
    """The engine fed over its pipe, as the trainer's loader feeds it (batches built beforehand here)."""
    batch = len(batches[0]["images"])
    with Engine(ctx["data"].root) as e:
        init(e, model_config, batch, ctx["device"], True, ctx["cuda"])
        for i in range(warmup):
            e.call("step", tensors_of(batches[i % len(batches)]), lr=LR)
        started = time.perf_counter()
        for i in range(timed):
            e.call("step", tensors_of(batches[(warmup + i) % len(batches)]), lr=LR)
        return timed / (time.perf_counter() - started)


def engine_loading(ctx, model_config, batch, workers, warmup_epochs, timed_steps):
    """The engine building its own batches (`data`, `plan`, steps naming their batch) with `workers` workers."""
    data = ctx["data"]
    with Engine(data.root) as e:
        init(e, model_config, batch, ctx["device"], True, ctx["cuda"])
        e.call("data", config=data.config, workers=workers, prefetch=4)
        epoch = 0
        for epoch in range(warmup_epochs):
            plan = data.plan(epoch, batch)
            e.call("plan", epoch=epoch, batches=plan)
            for index, _ in plan:
                e.call("step", lr=LR, batch={"epoch": epoch, "index": index})
        taken = 0
        started = time.perf_counter()
        while taken < timed_steps:
            epoch += 1
            plan = data.plan(epoch, batch)[: timed_steps - taken]
            e.call("plan", epoch=epoch, batches=plan)
            for index, _ in plan:
                e.call("step", lr=LR, batch={"epoch": epoch, "index": index})
            taken += len(plan)
        return taken / (time.perf_counter() - started)


def loader_alone(ctx, batch, workers, timed_steps):
    data = ctx["data"]
    local = dict(data.config)
    local["table"] = {**data.config["table"], "imagePaths": [os.path.join(data.root, p) for _, p in data.config["table"]["imagePaths"]]}
    with EngineDataLoader(local, workers, 4, [0], batch) as loader:
        plan = data.plan(0, batch)
        loader.start(0, [(i, s) for i, s in plan])
        for index, _ in plan:
            loader.next(0, index)
        taken, epoch = 0, 0
        started = time.perf_counter()
        while taken < timed_steps:
            epoch += 1
            plan = data.plan(epoch, batch)[: timed_steps - taken]
            loader.start(epoch, [(i, s) for i, s in plan])
            for index, _ in plan:
                loader.next(epoch, index)
            taken += len(plan)
        return taken / (time.perf_counter() - started)


def check_speed(ctx):
    model, batch = ctx["big"], ctx["batch"]
    warmup, timed = ctx["speed_warmup"], ctx["speed_steps"]
    batches = ctx["data"].batches(batch, 8)
    workers = ctx["workers"]
    bare = bare_loop(ctx, model, batches, warmup, timed) * batch
    pipe = engine_over_pipe(ctx, model, batches, warmup, timed) * batch
    loading = engine_loading(ctx, model, batch, workers, 1, timed) * batch
    alone = loader_alone(ctx, batch, workers, timed) * batch
    return {
        "status": "pass",
        "problems": [],
        "model": model["architecture"],
        "batch": batch,
        "precision": "fp16 autocast + GradScaler, channels_last" if ctx["cuda"] else "bf16 autocast (CPU)",
        "timedSteps": timed,
        "workers": workers,
        "samplesPerSecond": {"bare": bare, "engineOverPipe": pipe, "engineLoading": loading, "engineLoaderAlone": alone},
        "ratios": {"engineOverPipe/bare": pipe / bare, "engineLoading/bare": loading / bare},
    }


def shm_workers():
    """How many loader workers /dev/shm holds: each keeps a ring of batches there (about 6 of HRNet's 25.6 MB at
    batch 32 with prefetch 4), and a container's default /dev/shm is 64 MB."""
    try:
        free = shutil.disk_usage("/dev/shm").free
    except OSError:
        return 1
    return max(1, int(free * 0.8 // (6 * 25.6e6)))


CHECKS = {"amp": check_amp, "resume": check_resume, "oom": check_oom, "ddp": check_ddp, "speed": check_speed}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=".gpu-check")
    parser.add_argument("--out", default=".")
    parser.add_argument("--quick", action="store_true", help="tiny settings (for a CPU, to check the script)")
    parser.add_argument("--only", default="", help="comma-separated checks: " + ",".join(CHECKS))
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    cores = os.cpu_count() or 1
    ctx = {
        "data": Data(args.data),
        "cuda": cuda,
        "quick": args.quick,
        "device": "cuda" if cuda else "cpu",
        "small": LITE if args.quick else RESNET18,
        "big": LITE if args.quick else HRNET,
        "batch": 4 if args.quick else 32,
        "amp_steps": 4 if args.quick else 40,
        "resume_steps": 4 if args.quick else 8,
        "speed_warmup": 1 if args.quick else 10,
        "speed_steps": 3 if args.quick else 50,
        # The loader's workers: all cores but the engine's own and the driver's, as many as /dev/shm holds.
        "workers": 1 if args.quick else max(1, min(12, cores - 2, shm_workers())),
    }
    facts = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cudaBuild": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "nccl": torch.distributed.is_available() and torch.distributed.is_nccl_available(),
        "cores": cores,
        "loaderWorkers": ctx["workers"],
        "quick": args.quick,
        "instances": ctx["data"].count,
    }
    print(json.dumps({"facts": facts}), flush=True)
    only = [name for name in args.only.split(",") if name] or list(CHECKS)
    results = {}
    for name in only:
        started = time.perf_counter()
        try:
            result = CHECKS[name](ctx)
        except Exception as error:  # noqa: BLE001 - one broken check is reported, the others still run
            result = {"status": "fail", "problems": [f"{type(error).__name__}: {error}"], "traceback": traceback.format_exc()[-4000:]}
        result["seconds"] = round(time.perf_counter() - started, 1)
        results[name] = result
        print(json.dumps({name: {k: v for k, v in result.items() if k != "traceback"}}), flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu-check.json"), "w", encoding="utf-8") as f:
        json.dump({"facts": facts, "checks": results}, f, indent=1)
    failed = [name for name, r in results.items() if r["status"] == "fail"]
    print(f"{len(results) - len(failed)} of {len(results)} checks without failure" + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
