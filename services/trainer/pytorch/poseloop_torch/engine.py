"""The step engine: one job's model, optimizer and counters, and the request loop of PROTOCOL.md.

Semantics are libs/train's StepEngine's (libs/train/src/runner/step-engine.ts): the same loss, the same
accumulation (each micro-batch's loss / gradAccumSteps), clipping and optimizer update (torch.optim's
single-tensor code, which libs/train's graphs reproduce), the same state names, so a checkpoint moves between
the engines.
"""
import contextlib
import math
import os
import platform
import re
import signal
import sys
import time
import traceback

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from . import protocol, zoo

INVALID_ARGUMENT = "INVALID_ARGUMENT"
FAILED_PRECONDITION = "FAILED_PRECONDITION"
OUT_OF_MEMORY = "OUT_OF_MEMORY"
INTERNAL = "INTERNAL"

OOM_ADVICE = "lower TRAIN.BATCH_SIZE_PER_GPU, raise TRAIN.GRAD_ACCUM_STEPS, or turn on TRAIN.AMP"
# Test hook, "oom:N", "error:N" or "hang:N": the N-th step request (1-based) fails after its backward pass with a
# CUDA out-of-memory error or an unexpected one, or never answers, so those paths (answer, state kept, the
# trainer's progress timeout) can be tested without a GPU.
INJECT_ENV = "POSELOOP_TORCH_INJECT"


class EngineError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def is_out_of_memory(error):
    oom = getattr(torch.cuda, "OutOfMemoryError", None)  # torch 2.x; 1.13 raises a RuntimeError
    # cuBLAS and cuDNN report a failed workspace allocation in their own words.
    return (oom is not None and isinstance(error, oom)) or (isinstance(error, RuntimeError) and any(words in str(error) for words in ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED")))


def hello():
    cuda = torch.cuda.is_available()
    devices = []
    if cuda:
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices.append({"index": i, "name": props.name, "memoryBytes": props.total_memory})
    distributed = dist.is_available()
    return {
        "type": "hello",
        "protocol": protocol.PROTOCOL_VERSION,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": {"available": cuda, "devices": devices},
        # CPU autocast runs bf16 on every build this engine supports; on CUDA it takes Ampere or later.
        "bf16": bool(torch.cuda.is_bf16_supported()) if cuda else True,
        "distributed": {"gloo": distributed and dist.is_gloo_available(), "nccl": distributed and dist.is_nccl_available()},
    }


class Distributed:
    """The torchrun world (WORLD_SIZE > 1): rank 0 speaks the protocol and broadcasts each request over a gloo
    group (also used for CPU training); CUDA training all-reduces over NCCL."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.control = None
        self._nccl = None
        if self.world > 1:
            dist.init_process_group("gloo")
            self.control = dist.group.WORLD

    @property
    def active(self):
        return self.world > 1

    def training_group(self, device):
        if device.type != "cuda":
            return self.control
        if self._nccl is None:
            self._nccl = dist.new_group(backend="nccl")
        return self._nccl

    def broadcast(self, obj=None):
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def gather(self, obj):
        out = [None] * self.world
        dist.all_gather_object(out, obj, group=self.control)
        return out


def resolve_image_path(entry):
    """An image path of the `data` request, ["data" | "work", relative path], against this node's roots
    (POSELOOP_DATA_ROOT, POSELOOP_WORK_DIR, as its trainer set them). Like the trainer, the engine reads
    nothing outside them."""
    if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(part, str) for part in entry)):
        raise EngineError(INVALID_ARGUMENT, f"an image path must be [root, relative path], got {entry!r}")
    root, path = entry
    variable = {"data": "POSELOOP_DATA_ROOT", "work": "POSELOOP_WORK_DIR"}.get(root)
    if variable is None:
        raise EngineError(INVALID_ARGUMENT, f"an image path's root must be data or work, got {root!r}")
    parts = path.split("/")
    if path == "" or path.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise EngineError(INVALID_ARGUMENT, f"an image path must be relative to the {root} root, without . or .. parts, got {path!r}")
    base = os.environ.get(variable)
    if not base:
        raise EngineError(FAILED_PRECONDITION, f"an image under the trainer's {root} root, but {variable} is not set for the engine")
    return os.path.join(base, *parts)


def _float(x):
    return float(x.detach().float().cpu().item()) if torch.is_tensor(x) else float(x)


def _int(request, key, default, minimum):
    value = request.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise EngineError(INVALID_ARGUMENT, f"{key} must be an integer ≥ {minimum}, got {value!r}")
    return value


def resolve_device(spec, dist_ctx):
    if spec == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", str(spec))
    if match is None:
        raise EngineError(INVALID_ARGUMENT, f"device must be cpu, cuda or cuda:N, got {spec!r}")
    if not torch.cuda.is_available():
        raise EngineError(FAILED_PRECONDITION, f"device {spec} is not usable: torch.cuda.is_available() is false (torch {torch.__version__}, CUDA build {torch.version.cuda})")
    # Under torchrun each process takes the GPU of its local rank.
    index = dist_ctx.local_rank if dist_ctx.active else int(match.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise EngineError(FAILED_PRECONDITION, f"device {spec} is not usable: cuda:{index} asked for, torch.cuda.device_count() is {count}")
    return torch.device("cuda", index)


def resolve_optimizer(config):
    """libs/train's resolveOptimizer: the same defaults."""
    kind = config.get("kind")
    if kind not in ("sgd", "adam", "adamw"):
        raise EngineError(INVALID_ARGUMENT, f"optimizer kind must be sgd, adam or adamw, got {kind!r}")
    return {
        "kind": kind,
        "momentum": config.get("momentum", 0.9 if kind == "sgd" else 0),
        "nesterov": bool(config.get("nesterov", False)),
        "weightDecay": config.get("weightDecay", 0.01 if kind == "adamw" else 0),
        "beta1": config.get("beta1", 0.9),
        "beta2": config.get("beta2", 0.999),
        "epsilon": config.get("epsilon", 1e-8),
    }


def resolve_ema(config):
    """TRAIN.EMA as libs/train's EmaConfig ({decay, warmupUpdates}), or None."""
    if config is None:
        return None
    if not isinstance(config, dict):
        raise EngineError(INVALID_ARGUMENT, f"ema must be an object {{decay, warmupUpdates}}, got {config!r}")
    decay = config.get("decay")
    warmup = config.get("warmupUpdates", 0)
    problems = []
    if not isinstance(decay, (int, float)) or isinstance(decay, bool) or not 0 < decay < 1:
        problems.append(f"ema decay must lie in (0, 1), got {decay!r}")
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        problems.append(f"ema warmupUpdates must be a non-negative integer, got {warmup!r}")
    if problems:
        raise EngineError(INVALID_ARGUMENT, "; ".join(problems))
    return {"decay": float(decay), "warmupUpdates": warmup}


def ema_decay(ema, updates):
    """libs/train's emaDecay: decay * (1 - exp(-updates / warmupUpdates)), or decay without a warm-up."""
    if ema["warmupUpdates"] == 0:
        return ema["decay"]
    return ema["decay"] * (1 - math.exp(-updates / ema["warmupUpdates"]))


def make_optimizer(params, o, single_tensor=True):
    """torch.optim's optimizer for libs/train's OptimizerConfig. `single_tensor`: the per-parameter code that
    libs/train's graphs reproduce (the CPU, where the engines' parity is tested); without it torch picks its
    multi-tensor code, which on a GPU updates every parameter in a few kernel launches instead of a few per
    parameter (HRNet-W32 has ~1,000 parameter tensors) and rounds differently in the last bit."""
    if o["kind"] == "sgd":
        cls, kwargs = torch.optim.SGD, {"momentum": o["momentum"], "nesterov": o["nesterov"], "weight_decay": o["weightDecay"]}
    else:
        cls = torch.optim.Adam if o["kind"] == "adam" else torch.optim.AdamW
        kwargs = {"betas": (o["beta1"], o["beta2"]), "eps": o["epsilon"], "weight_decay": o["weightDecay"]}
    try:
        if single_tensor:
            try:
                return cls(params, lr=0.0, foreach=False, **kwargs)
            except TypeError:  # a torch without the foreach option has only the single-tensor code
                pass
        return cls(params, lr=0.0, **kwargs)
    except ValueError as error:
        raise EngineError(INVALID_ARGUMENT, f"invalid optimizer: {error}") from None


def gradient_norm(grads, foreach):
    """clip_grad_norm_'s norm (the 2-norm of the per-tensor 2-norms) without clipping. `foreach`: torch's
    multi-tensor norm, a few kernel launches for all tensors where the per-tensor loop launches one each (HRNet-W32
    has 878 parameter tensors: milliseconds a step on a GPU); on the CPU the per-tensor loop, whose rounding the
    parity tests hold."""
    foreach_norm = getattr(torch, "_foreach_norm", None)
    if foreach and foreach_norm is not None:
        return torch.linalg.vector_norm(torch.stack(foreach_norm(grads, 2.0)), 2.0)
    return torch.norm(torch.stack([torch.norm(g, 2.0) for g in grads]), 2.0)


def copy_all(targets, sources):
    """targets[i].copy_(sources[i]) for every i, without autograd: torch's multi-tensor copy where it has one
    (2.1+: a few launches on a GPU for HRNet-W32's ~580 BatchNorm statistics, instead of one each)."""
    foreach_copy = getattr(torch, "_foreach_copy_", None)
    with torch.no_grad():
        if foreach_copy is not None and targets:
            foreach_copy(targets, sources)
        else:
            for target, source in zip(targets, sources):
                target.copy_(source)


def optimizer_slots(o):
    if o["kind"] == "sgd":
        return ["momentum_buffer"] if o["momentum"] > 0 else []
    return ["exp_avg", "exp_avg_sq"]


class Job:
    """One `init`: the model on its device, the optimizer, the counters."""

    def __init__(self, request, dist_ctx):
        self.dist = dist_ctx
        model_config = request.get("model")
        training = request.get("training")
        if not isinstance(model_config, dict) or not isinstance(training, dict):
            raise EngineError(INVALID_ARGUMENT, "init needs model (a ModelConfig) and training")
        self.device = resolve_device(request.get("device", "cpu"), dist_ctx)
        self.batch_size = _int(training, "batchSize", None, 1)
        self.k = _int(training, "gradAccumSteps", 1, 1)
        self.clip = float(training.get("clipGradNorm", 0) or 0)
        self.distillation = training.get("distillation")
        if self.distillation is not None and zoo.is_detector(model_config if isinstance(model_config, dict) else {}):
            raise EngineError(INVALID_ARGUMENT, "distillation applies to heatmap models, not to the detector")
        if self.distillation is not None and self.distillation.get("kind") not in ("mse", "kl"):
            raise EngineError(INVALID_ARGUMENT, f"distillation kind must be mse or kl, got {self.distillation.get('kind')!r}")
        replicas = _int(request, "replicas", 1, 1)
        if dist_ctx.active and replicas != dist_ctx.world:
            raise EngineError(INVALID_ARGUMENT, f"under torchrun each process is one replica: replicas is {replicas}, WORLD_SIZE is {dist_ctx.world}")
        self.replicas = replicas
        # In one process the replicas run one after another; under torchrun each rank runs its own block.
        self.local_blocks = [dist_ctx.rank] if dist_ctx.active else list(range(replicas))
        threads = _int(request, "threads", 0, 0)
        if threads > 0:
            torch.set_num_threads(threads)
        if request.get("deterministic", False):
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            # warn_only: nearest upsampling's CUDA backward (HRNet's fusions) has no deterministic kernel.
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        cuda = self.device.type == "cuda"
        if cuda and not request.get("deterministic", False):
            # Every step has the same shapes: cuDNN times its algorithms once per shape and keeps the fastest
            # (the reference HRNet and mmpose recipes turn this on too).
            torch.backends.cudnn.benchmark = True
        if cuda:
            torch.cuda.set_device(self.device)
        self.config = model_config
        try:
            model = zoo.build_model(model_config)
        except (ValueError, KeyError, TypeError) as error:
            raise EngineError(INVALID_ARGUMENT, str(error)) from None
        # The sub-pixel deconvolution only pays on CPU; cuDNN's transposed convolution is fast.
        zoo.set_subpixel(model, not cuda)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 0.1
        if request.get("syncBatchNorm", False) and replicas > 1 and not dist_ctx.active:
            raise EngineError(FAILED_PRECONDITION, "syncBatchNorm needs one process per replica (torchrun); replicas in one process keep BatchNorm per replica")
        if request.get("syncBatchNorm", False) and dist_ctx.active:
            if not cuda:
                raise EngineError(FAILED_PRECONDITION, "syncBatchNorm needs CUDA devices (torch's SyncBatchNorm has no CPU kernel)")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.channels_last = bool(request.get("channelsLast", False)) and cuda
        model = model.to(self.device, memory_format=torch.channels_last) if self.channels_last else model.to(self.device)
        model.train()
        self.model = model
        self.params = list(model.named_parameters())
        self.buffers = [(n, b) for n, b in model.named_buffers() if not n.endswith("num_batches_tracked")]
        # Room for the BatchNorm statistics as a step found them (restored when it fails) and as replica 0 left
        # them (restored after the other replicas of a process ran): filled every step, allocated once.
        self._buffer_list = [b for _, b in self.buffers]
        self._saved_buffers = [torch.empty_like(b) for b in self._buffer_list]
        self._replica0_buffers = [torch.empty_like(b) for b in self._buffer_list] if len(self.local_blocks) > 1 else []
        self.net = model
        if dist_ctx.active:
            from torch.nn.parallel import DistributedDataParallel

            # broadcast_buffers: every forward starts from rank 0's BatchNorm statistics (running stats from
            # replica 0); the gradients are averaged, the mean of the replicas' gradients.
            self.net = DistributedDataParallel(
                model,
                device_ids=[self.device.index] if cuda else None,
                broadcast_buffers=True,
                process_group=dist_ctx.training_group(self.device),
            )
        self.opt_config = resolve_optimizer(training.get("optimizer") or {})
        self.slots = optimizer_slots(self.opt_config)
        self.optimizer = make_optimizer([p for _, p in self.params], self.opt_config, single_tensor=not cuda)
        self._init_slots(0)
        self.ema = resolve_ema(training.get("ema"))
        # TRAIN.EMA: the moving average of every parameter and (float) buffer, as averaged as
        # AveragedModel(use_buffers=True) would; set_state starts it at the weights a state without one holds.
        self.averaged = []
        if self.ema is not None:
            self.averaged = [(f"ema:param:{n}", p.detach().clone().float()) for n, p in self.params] + [(f"ema:buffer:{n}", b.detach().clone().float()) for n, b in self.buffers]
        amp = bool(request.get("amp", False))
        self.amp = ("fp16" if cuda else "bf16") if amp else None
        self.scaler = None
        if self.amp == "fp16":
            scaler_cls = getattr(torch.amp, "GradScaler", None) if hasattr(torch, "amp") else None
            self.scaler = scaler_cls("cuda") if scaler_cls is not None else torch.cuda.amp.GradScaler()
        self.skipped = 0
        self.step_count = 0
        self.micro_step = 0
        self.step_requests = 0
        kind, _, at = os.environ.get(INJECT_ENV, "").partition(":")
        self.inject = (kind, int(at)) if at else None
        # TRAIN.DATA_LOADER engine: this process's own loader (the `data` request), else batches come in each step.
        self.data = None

    def close(self):
        if self.data is not None:
            self.data.close()
            self.data = None

    # --- data loading in the engine ----------------------------------------------------------------------

    def attach_data(self, request):
        """`data`: the job's samples and batch settings (libs/data's BatchBuilderConfig); this process's loader
        builds its replica blocks of each planned batch in torch.utils.data worker processes."""
        from .data.loader import EngineDataLoader

        if zoo.is_detector(self.config):
            raise EngineError(INVALID_ARGUMENT, "the engine loads pose (top-down) batches only; the detector's come from the trainer")
        if self.distillation is not None:
            raise EngineError(INVALID_ARGUMENT, "with distillation the trainer sends each batch (its teacher's heatmaps are computed from it)")
        config = request.get("config")
        if not isinstance(config, dict) or not isinstance(config.get("table"), dict):
            raise EngineError(INVALID_ARGUMENT, "data needs config with a sample table")
        size = config.get("inputSize") or {}
        if [size.get("width"), size.get("height")] != [self.config["inputWidth"], self.config["inputHeight"]]:
            raise EngineError(INVALID_ARGUMENT, f"the data's input size {size.get('width')}x{size.get('height')} is not the model's {self.config['inputWidth']}x{self.config['inputHeight']}")
        if config["table"].get("numKeypoints") != self.config["numKeypoints"]:
            raise EngineError(INVALID_ARGUMENT, f"the samples have {config['table'].get('numKeypoints')} keypoints, the model {self.config['numKeypoints']}")
        workers = _int(request, "workers", 1, 0)
        prefetch = _int(request, "prefetch", 2, 1)
        resolved = {**config, "table": {**config["table"], "imagePaths": [resolve_image_path(entry) for entry in config["table"].get("imagePaths", [])]}}
        if config.get("badSamples", "fail") != "fail":
            raise EngineError(INVALID_ARGUMENT, f"the engine's loader fails a job on a bad sample (badSamples \"fail\"), got {config.get('badSamples')!r}")
        if self.data is not None:
            self.data.close()
            self.data = None
        try:
            self.data = EngineDataLoader(resolved, workers, prefetch, self.local_blocks, self.batch_size)
            self.data_samples = int(config["table"].get("count", 0))
        except (ValueError, KeyError, TypeError) as error:
            raise EngineError(INVALID_ARGUMENT, f"data: {error}") from None
        return {"type": "data_ready", "samples": int(config["table"].get("count", 0)), "workers": workers}

    def plan(self, request):
        """`plan`: the batches the next steps take, in order; this process's workers start building them."""
        if self.data is None:
            raise EngineError(FAILED_PRECONDITION, "plan before data")
        epoch = _int(request, "epoch", None, 0)
        batches = request.get("batches")
        global_batch = self.batch_size * self.replicas
        if not isinstance(batches, list) or any(not (isinstance(b, list) and len(b) == 2 and isinstance(b[0], int) and isinstance(b[1], list) and len(b[1]) == global_batch) for b in batches):
            raise EngineError(INVALID_ARGUMENT, f"plan needs batches as [index, [{global_batch} sample indices]] (batchSize {self.batch_size} × {self.replicas} replicas)")
        count = self.data_samples
        for index, samples in batches:
            bad = next((i for i in samples if not isinstance(i, int) or i < 0 or i >= count), None)
            if bad is not None:
                raise EngineError(INVALID_ARGUMENT, f"batch {index} of the plan names sample {bad!r}; there are {count}")
        self.data.start(epoch, [(index, samples) for index, samples in batches])
        return {"type": "ok"}

    def _planned_inputs(self, request):
        """This process's blocks of the planned batch the step names, built by its loader. Under torchrun every
        rank learns whether all ranks have theirs before any of them enters a collective."""
        from .data.images import DataError

        ref = request.get("batch")
        failure = None
        built = None
        if self.data is None:
            failure = (FAILED_PRECONDITION, "a step names a batch but the engine was given no data")
        elif not isinstance(ref, dict) or not isinstance(ref.get("epoch"), int) or not isinstance(ref.get("index"), int):
            failure = (INVALID_ARGUMENT, f"batch must be {{epoch, index}}, got {ref!r}")
        else:
            try:
                built = self.data.next(ref["epoch"], ref["index"])
            except DataError as error:
                failure = (INVALID_ARGUMENT, error.message)
            except ValueError as error:
                failure = (FAILED_PRECONDITION, str(error))
            except Exception as error:  # noqa: BLE001 - a worker that died: every rank must still reach the gather
                traceback.print_exc(file=sys.stderr)
                failure = (INTERNAL, f"the data loader failed: {_one_line(error)}")
        if self.dist.active:
            failures = self.dist.gather(failure)
            if failure is None:
                failure = next(((f[0], f"on rank {r}: {f[1]}") for r, f in enumerate(failures) if f is not None), None)
        if failure is not None:
            raise EngineError(*failure)
        return {"images": built.images, "targets": built.targets, "target_weights": built.target_weights}

    # --- state ---------------------------------------------------------------------------------------

    def _init_slots(self, adam_step):
        """Creates every optimizer slot now (zeros: what torch's lazy init computes with), so get_state always
        has them and a first update allocates nothing."""
        for _, p in self.params:
            state = self.optimizer.state[p]
            if self.opt_config["kind"] == "sgd":
                if self.slots:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            else:
                state["step"] = torch.tensor(float(adam_step))
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def ready(self):
        return {
            "type": "ready",
            "device": str(self.device),
            "amp": self.amp,
            "worldSize": self.dist.world,
            "params": [[n, list(p.shape)] for n, p in self.params],
            "buffers": [[n, list(b.shape)] for n, b in self.buffers],
            "ema": self.ema is not None,
        }

    def weights(self):
        return [(f"param:{n}", _numpy(p)) for n, p in self.params] + [(f"buffer:{n}", _numpy(b)) for n, b in self.buffers]

    def averaged_weights(self):
        if self.ema is None:
            raise EngineError(FAILED_PRECONDITION, "get_weights averaged: this job keeps no moving average (init without training.ema)")
        return [(name, _numpy(t)) for name, t in self.averaged]

    def _reset_average(self):
        with torch.no_grad():
            for (_, t), (_, source) in zip(self.averaged, self.params + self.buffers):
                t.copy_(source.detach())

    def _update_average(self):
        """After an optimizer update (the step_count-th): ema = d * ema + (1 - d) * weight."""
        if self.ema is None:
            return
        d = ema_decay(self.ema, self.step_count)
        with torch.no_grad():
            for (_, t), (_, source) in zip(self.averaged, self.params + self.buffers):
                t.mul_(d).add_(source.detach().float(), alpha=1 - d)

    def _accum(self, p):
        """The unfinished accumulation cycle's gradient of p (unscaled; under torchrun the replicas' mean)."""
        if p.grad is None:
            return torch.zeros_like(p)
        grad = p.grad.detach().clone()
        if self.scaler is not None:
            grad.div_(self.scaler.get_scale())
        if self.dist.active:
            # Each rank holds its own sum until the cycle's last backward averages them; the state keeps the mean.
            dist.all_reduce(grad, group=self.dist.training_group(self.device))
            grad.div_(self.dist.world)
        return grad

    def get_state(self):
        tensors = self.weights()
        for slot in self.slots:
            tensors += [(f"slot:{slot}:{n}", _numpy(self.optimizer.state[p][slot])) for n, p in self.params]
        if self.k > 1:
            tensors += [(f"accum:{n}", _numpy(self._accum(p))) for n, p in self.params]
        tensors += [(name, _numpy(t)) for name, t in self.averaged]
        fields = {"type": "state", "step": self.step_count, "microStep": self.micro_step}
        if self.scaler is not None:
            fields["lossScaler"] = {"scale": float(self.scaler.get_scale()), "goodSteps": int(self.scaler._get_growth_tracker()), "skippedSteps": self.skipped}
        return fields, tensors

    def set_state(self, request, tensors):
        step = _int(request, "step", 0, 0)
        micro = _int(request, "microStep", 0, 0)
        if micro >= self.k:
            raise EngineError(INVALID_ARGUMENT, f"micro-step {micro} is outside 0..{self.k - 1}")
        targets = {f"param:{n}": p for n, p in self.params}
        targets.update({f"buffer:{n}": b for n, b in self.buffers})
        for slot in self.slots:
            targets.update({f"slot:{slot}:{n}": self.optimizer.state[p][slot] for n, p in self.params})
        accum = {f"accum:{n}": p for n, p in self.params} if self.k > 1 else {}
        averaged = dict(self.averaged)
        averaged_given = [name for name in averaged if name in tensors]
        if averaged_given and len(averaged_given) < len(averaged):
            raise EngineError(INVALID_ARGUMENT, f"the state has {len(averaged_given)} of the {len(averaged)} moving-average tensors (ema:...)")
        targets.update(averaged)
        unknown = [name for name in tensors if name not in targets and name not in accum]
        if unknown:
            raise EngineError(INVALID_ARGUMENT, f"the state has tensors the model does not: {', '.join(unknown[:5])}")
        missing = [name for name in targets if name.startswith(("param:", "buffer:")) and name not in tensors]
        if missing:
            raise EngineError(INVALID_ARGUMENT, f"the state has no tensor {', '.join(missing[:5])}")
        if micro > 0 and any(name not in tensors for name in accum):
            raise EngineError(INVALID_ARGUMENT, f"a state at micro-step {micro} needs every accum:<name> tensor")
        for name, array in tensors.items():
            target = targets.get(name, accum.get(name))
            if tuple(array.shape) != tuple(target.shape):
                raise EngineError(INVALID_ARGUMENT, f"tensor {name} has shape {list(array.shape)}, the model needs {list(target.shape)}")
        scaler_state = request.get("lossScaler")
        skipped = 0
        if self.scaler is not None and scaler_state is not None:
            skipped = _int(scaler_state, "skippedSteps", 0, 0)
            if skipped > step:
                raise EngineError(INVALID_ARGUMENT, f"the state skipped {skipped} of its {step} updates")
        # Validated: nothing below fails on the request's account.
        self._init_slots(step - skipped)
        for slot in self.slots:
            targets.update({f"slot:{slot}:{n}": self.optimizer.state[p][slot] for n, p in self.params})
        with torch.no_grad():
            for name, target in targets.items():
                if name in tensors:
                    target.copy_(torch.from_numpy(tensors[name]))
        if averaged and not averaged_given:
            self._reset_average()
        if self.scaler is not None:
            # A state saved without mixed precision continues with a fresh scaler (its updates were all applied).
            # Restored before the accumulated gradients, which are kept unscaled and scaled by it here.
            fresh = {"scale": 2.0**16, "goodSteps": 0}
            given = scaler_state or fresh
            self.scaler.load_state_dict(
                {"scale": float(given.get("scale", fresh["scale"])), "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000, "_growth_tracker": int(given.get("goodSteps", 0))}
            )
        with torch.no_grad():
            for name, p in accum.items():
                if micro == 0:
                    p.grad = None
                else:
                    grad = torch.from_numpy(tensors[name]).to(self.device)
                    if self.scaler is not None:
                        grad = grad * self.scaler.get_scale()
                    p.grad = grad.to(memory_format=torch.channels_last) if self.channels_last and p.dim() == 4 else grad.contiguous()
        if self.k == 1 or micro == 0:
            self.optimizer.zero_grad(set_to_none=True)
        self.skipped = skipped
        self.step_count = step
        self.micro_step = micro

    # --- the step -------------------------------------------------------------------------------------

    def _inputs(self, tensors):
        b = self.batch_size * self.replicas
        w, h = self.config["inputWidth"], self.config["inputHeight"]
        stride = zoo.heatmap_stride(self.config)
        if zoo.is_detector(self.config):
            # The detector's loss inputs, named as in libs/train's training graphs.
            grid = [h // stride, w // stride]
            classes = (self.config.get("detector") or {}).get("numClasses", 1)
            want = {"images": [b, 3, h, w], "center_target": [b, classes, *grid], "size_target": [b, 2, *grid], "offset_target": [b, 2, *grid], "reg_mask": [b, 1, *grid]}
        else:
            k = self.config["numKeypoints"]
            want = {"images": [b, 3, h, w], "targets": [b, k, h // stride, w // stride], "target_weights": [b, k]}
        if self.distillation is not None:
            want["teacher"] = [b, k, h // stride, w // stride]
        out = {}
        for name, shape in want.items():
            if name not in tensors:
                what = " (distillation needs teacher heatmaps in every batch)" if name == "teacher" else ""
                raise EngineError(INVALID_ARGUMENT, f"step needs tensor {name}{what}")
            if list(tensors[name].shape) != shape:
                raise EngineError(INVALID_ARGUMENT, f"{name} has shape {list(tensors[name].shape)}, want {shape} (batchSize {self.batch_size} × {self.replicas} replicas)")
            out[name] = tensors[name]
        return out

    def _loss(self, output, block):
        if zoo.is_detector(self.config):
            size_weight, offset_weight = zoo.detector_loss_weights(self.config)
            outputs = tuple(o.float() for o in output)
            return zoo.detector_loss(outputs, block["center_target"], block["size_target"], block["offset_target"], block["reg_mask"], size_weight, offset_weight)
        output, teacher = output.float(), block.get("teacher")
        loss = zoo.joints_mse(output, block["targets"], block["target_weights"])
        if self.distillation is not None:
            kind = self.distillation["kind"]
            term = zoo.distill_mse(output, teacher) if kind == "mse" else zoo.distill_kl(output, teacher, float(self.distillation.get("temperature", 1)))
            loss = loss + float(self.distillation["weight"]) * term
        return loss

    def _autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.float16 if self.amp == "fp16" else torch.bfloat16)

    def step(self, request, tensors):
        lr = request.get("lr")
        if not isinstance(lr, (int, float)) or isinstance(lr, bool):
            raise EngineError(INVALID_ARGUMENT, f"step needs a numeric lr, got {lr!r}")
        planned = "batch" in request
        if planned:
            inputs = self._planned_inputs(request)
        else:
            inputs = self._inputs(tensors)
        self.step_requests += 1
        # What a failed step must leave as it found: BatchNorm statistics (cheap) and, mid-cycle, the
        # accumulated gradients (one copy of the parameters, only with accumulation).
        copy_all(self._saved_buffers, self._buffer_list)
        saved_grads = [None if p.grad is None else p.grad.detach().clone() for _, p in self.params] if self.micro_step > 0 else None
        try:
            return self._step(float(lr), inputs, local=planned)
        except BaseException:
            copy_all(self._buffer_list, self._saved_buffers)
            if self.scaler is not None:
                # A step that failed after unscale_ (out of memory in the optimizer's update) would leave the
                # scaler believing this optimizer unscaled, and every later step refused.
                self.scaler._per_optimizer_states.clear()
            with torch.no_grad():
                for i, (_, p) in enumerate(self.params):
                    p.grad = None if saved_grads is None else saved_grads[i]
            raise

    def _to_device(self, array):
        t = torch.from_numpy(array).to(self.device, non_blocking=True)
        return t.contiguous(memory_format=torch.channels_last) if self.channels_last and t.dim() == 4 else t

    def _step(self, lr, inputs, local=False):
        """`local`: the inputs hold this process's blocks only (its own loader's), in local_blocks order."""
        final = self.micro_step == self.k - 1
        n = len(self.local_blocks)
        bs = self.batch_size
        losses = []
        for i, r in enumerate(self.local_blocks):
            at = i if local else r
            block = {name: self._to_device(array[at * bs : (at + 1) * bs]) for name, array in inputs.items()}
            sync = contextlib.nullcontext() if final or not self.dist.active else self.net.no_sync()
            with sync:
                with self._autocast():
                    output = self.net(block["images"])
                loss = self._loss(output, block)
                # Mean over the update's micro-batches and over this process's replicas (torchrun: DDP averages).
                scaled = loss / (self.k * n)
                if self.scaler is not None:
                    scaled = self.scaler.scale(scaled)
                scaled.backward()
            losses.append(loss.detach())
            if n > 1 and i == 0:
                copy_all(self._replica0_buffers, self._buffer_list)
        if n > 1:
            copy_all(self._buffer_list, self._replica0_buffers)
        if self.inject is not None and self.inject[1] == self.step_requests:
            if self.inject[0] == "hang":
                # A step that never ends (a deadlocked collective, a wedged driver): only the trainer's progress
                # timeout ends it, by killing the process.
                signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM, signal.SIGINT])
                while True:
                    time.sleep(3600)
            if self.inject[0] == "oom":
                raise RuntimeError(f"CUDA out of memory. Tried to allocate 2.00 GiB (injected by {INJECT_ENV})")
            raise ValueError(f"injected by {INJECT_ENV}\nits second line")
        total = losses[0].float()
        for extra in losses[1:]:
            total = total + extra.float()
        if self.dist.active:
            total = total.cpu()
            dist.all_reduce(total, group=self.dist.control)
            loss_value = _float(total) / self.dist.world
        else:
            loss_value = _float(total) / n
        if not final:
            self.micro_step += 1
            return self._result(loss_value, False, None, {})
        params = [p for _, p in self.params]
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, self.clip)
        else:
            norm = gradient_norm([p.grad.detach() for p in params], foreach=self.device.type == "cuda")
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        extra = {}
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            found_inf = sum(v.item() for v in self.scaler._per_optimizer_states[id(self.optimizer)]["found_inf_per_device"].values())
            self.scaler.update()
            skipped = found_inf > 0
            self.skipped += int(skipped)
            extra = {"skipped": skipped, "lossScale": float(self.scaler.get_scale())}
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_count += 1
        self.micro_step = 0
        self._update_average()
        return self._result(loss_value, True, _float(norm), extra)

    def _result(self, loss, updated, grad_norm, extra):
        result = {"type": "step_result", "loss": loss, "updated": updated, "gradNorm": grad_norm, "step": self.step_count}
        if self.scaler is not None and not extra:
            extra = {"lossScale": float(self.scaler.get_scale())}
        result.update(extra)
        return result


def _numpy(t):
    return t.detach().to("cpu", torch.float32).contiguous().numpy()


class Server:
    """Answers requests one at a time; under torchrun every rank runs the same requests (rank 0 reads them
    and broadcasts them), and rank 0 answers."""

    def __init__(self, dist_ctx, inp=None, out=None):
        self.dist = dist_ctx
        self.inp = inp
        self.out = out
        self.job = None
        self.signalled = False

    def _on_signal(self, signum, _frame):
        # The request in progress finishes and is answered; the trainer then asks for the state and ends us.
        self.signalled = True
        print(f"poseloop_torch: signal {signum} received, finishing the current request", file=sys.stderr, flush=True)

    def install_signals(self):
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def handle(self, message, tensors):
        """The answer (fields, tensors) to one request; raises EngineError."""
        kind = message.get("type")
        if kind == "init":
            if self.job is not None:
                self.job.close()
            self.job = None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.job = Job(message, self.dist)
            return self.job.ready(), []
        if kind == "shutdown":
            return {"type": "bye"}, []
        if kind not in ("set_state", "get_state", "get_weights", "step", "data", "plan"):
            raise EngineError(INVALID_ARGUMENT, f"unknown request type {kind!r}")
        if self.job is None:
            raise EngineError(FAILED_PRECONDITION, f"{kind} before init")
        if kind == "set_state":
            self.job.set_state(message, tensors)
            return {"type": "ok"}, []
        if kind == "get_state":
            return self.job.get_state()
        if kind == "data":
            return self.job.attach_data(message), []
        if kind == "plan":
            return self.job.plan(message), []
        if kind == "get_weights":
            return {"type": "weights"}, self.job.averaged_weights() if message.get("averaged", False) else self.job.weights()
        return self.job.step(message, tensors), []

    def run_one(self, message, tensors):
        """(answer fields, tensors) or an error answer; never raises but for BaseExceptions that end the process."""
        try:
            return self.handle(message, tensors), None
        except EngineError as error:
            return None, (error.code, error.message)
        except Exception as error:  # noqa: BLE001 - every failure becomes an answer
            traceback.print_exc(file=sys.stderr)
            if is_out_of_memory(error):
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                return None, (OUT_OF_MEMORY, f"out of device memory in {message.get('type')}: {OOM_ADVICE}. ({_one_line(error)})")
            return None, (INTERNAL, _one_line(error))

    def serve(self):
        if self.dist.rank != 0:
            return self._follow()
        while True:
            try:
                got = protocol.read_message(self.inp)
            except protocol.ProtocolError as error:
                self._send({"type": "error", "id": None, "code": INVALID_ARGUMENT, "message": f"protocol error: {error}"})
                if error.fatal:
                    self._broadcast(None)
                    return 2
                continue
            if got is None:
                self._broadcast(None)
                return 0
            message, tensors = got
            rid = message.get("id")
            if not isinstance(rid, int) or isinstance(rid, bool):
                self._send({"type": "error", "id": None, "code": INVALID_ARGUMENT, "message": f"a request needs an integer id, got {rid!r}"})
                continue
            self._broadcast((message, tensors))
            answer, error = self.run_one(message, tensors)
            if self.dist.active:
                gathered = self.dist.gather(error)
                # Rank 0's own error first, else the first other rank's.
                if error is None:
                    error = next(((e[0], f"rank {r}: {e[1]}") for r, e in enumerate(gathered) if e is not None), None)
            if error is not None:
                self._send({"type": "error", "id": rid, "code": error[0], "message": error[1]})
                continue
            fields, out_tensors = answer
            self._send({**fields, "id": rid}, out_tensors)
            if fields["type"] == "bye":
                return 0

    def _follow(self):
        while True:
            got = self.dist.broadcast()
            if got is None:
                return 0
            message, tensors = got
            answer, error = self.run_one(message, tensors)
            self.dist.gather(error)
            if error is None and answer[0]["type"] == "bye":
                return 0

    def _broadcast(self, obj):
        if self.dist.active:
            self.dist.broadcast(obj)

    def _send(self, message, tensors=()):
        protocol.write_message(self.out, message, tensors)


def _one_line(error):
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".strip()
