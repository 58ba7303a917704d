"""Pretrained-weight import: maps a PyTorch state_dict file onto the parameters and buffers of a zoo model.

Run as ``python3 -m poseloop_torch.pretrained``. It reads one JSON request on stdin::

    {"file": "/abs/path.pth", "architecture": "hrnet" | "simplebaseline" | "lite",
     "targets": [[name, shape], ...], "skip": ["final_layer.", ...]}

and answers on stdout with one JSON line, followed (on success) by the raw little-endian float32 bytes of the
listed tensors in the listed order::

    {"ok": true, "mapped": N, "ignored": [...], "skipped": [...], "tensors": [[name, shape], ...]}
    {"ok": false, "problems": ["...", ...]}

Names. The zoo (libs/train) names its tensors as the reference implementations do (leoxiaobin's pose_hrnet.py
and pose_resnet.py), so files of the reference's model zoo map one to one. Also accepted:

- DataParallel / DistributedDataParallel prefixes ``module.`` (any number of them);
- MMPose checkpoints: the backbone under ``backbone.`` (mmpose's HRNet and ResNet name their layers like the
  reference: conv1/bn1, layer1, transitionN, stageN.M.branches / fuse_layers), the head under
  ``keypoint_head.`` (mmpose 0.x) or ``head.`` (1.x) with ``deconv_layers.{3i,3i+1}`` and ``final_layer``;
- wrappers ``{"state_dict": ...}``, ``{"model": ...}``, ``{"model_state_dict": ...}``;
- ImageNet classification backbones (HRNet-Image-Classification's hrnet_w32-36af842e.pth, torchvision's
  resnet50-19c8e357.pth), as the reference's ``MODEL.PRETRAINED`` uses them: their classification heads
  (``incre_modules.``, ``downsamp_modules.``, ``final_layer.0/1.``, ``classifier.``, ``fc.``) and the extra fuse
  rows of HRNet's multi-scale last module are ignored, and the pose head the file cannot have (``final_layer.``,
  SimpleBaseline's ``deconv_layers.``) keeps the zoo's initialization ("skipped").

Policy: ``num_batches_tracked`` is ignored. Every target the file lacks is a problem unless a ``skip`` prefix
covers it; a skipped target is never loaded (even when the file has it with the right shape), so
``final_layer.`` is the way to start from a checkpoint trained for a different keypoint count. Every file key
that maps to no target is a problem unless it is one of the known classification heads above. Every problem is
listed, not just the first.

Safety. The file is a pickle; nothing in it is run. TorchScript archives (which torch.load would hand to
torch.jit.load) are refused. ``torch.load(weights_only=True)`` (torch >= 1.13) reads the file; when it refuses
something (e.g. numpy arrays in mmpose 1.x's ``meta``, or an object where a weight should be), a restricted
unpickler reads it instead (through torch.load's ``pickle_module`` where torch honours it; torch 1.13 ignores that
argument, so there through torch's own zip and legacy readers). The restricted unpickler resolves only
tensor-rebuilding functions, storages, OrderedDict, numpy array reconstruction and plain builtins. Any other global becomes an inert placeholder that is never called; it is a
problem wherever it stands in place of a weight or of the state dict itself, and disregarded elsewhere (e.g. in
``meta``).
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import re
import sys
import zipfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

ARCHITECTURES = ("hrnet", "simplebaseline", "lite")
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
HEAD_PREFIXES = ("keypoint_head.", "head.")
# Heads of ImageNet classification nets: present in backbone files, absent from every pose model.
CLASSIFICATION_PREFIXES = ("incre_modules.", "downsamp_modules.", "classifier.", "fc.")
CLASSIFICATION_FINAL = re.compile(r"^final_layer\.\d+\.")
# The pose heads an ImageNet backbone file cannot have.
POSE_HEADS = {"hrnet": ("final_layer.",), "simplebaseline": ("deconv_layers.", "final_layer."), "lite": ()}
FUSE_KEY = re.compile(r"^stage(\d+)\.(\d+)\.fuse_layers\.(\d+)\.")


class Refused:
    """Stands in for a global the restricted unpickler would not resolve. It never calls anything."""

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "Refused":  # pickle's NEWOBJ path
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<refused {self.qualname}>"


def _refused_class(module: str, name: str) -> type:
    return type("Refused", (Refused,), {"qualname": f"{module}.{name}"})


def _safe_global(module: str, name: str) -> Optional[Any]:
    """The object for an allowed global, or None."""
    import torch

    if module == "collections" and name == "OrderedDict":
        return collections.OrderedDict
    if module == "torch._utils" and name in (
        "_rebuild_tensor",
        "_rebuild_tensor_v2",
        "_rebuild_tensor_v3",
        "_rebuild_parameter",
        "_rebuild_parameter_with_state",
    ):
        return getattr(torch._utils, name, None)
    if module == "torch._tensor" and name == "_rebuild_from_type_v2":
        # Calls its first argument and sets state on a type: both come through this same allowlist.
        return getattr(torch._tensor, name, None)
    if module == "torch.nn.parameter" and name == "Parameter":
        return torch.nn.Parameter
    if module == "torch" and name in ("Tensor", "Size", "device"):
        return getattr(torch, name)
    if module == "torch" and name.endswith("Storage") and isinstance(getattr(torch, name, None), type):
        return getattr(torch, name)
    if module in ("torch.storage", "torch") and name in ("UntypedStorage", "TypedStorage", "_LegacyStorage"):
        return getattr(torch.storage, name, None)
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
        import numpy

        # numpy 2 moved numpy.core to numpy._core (the old name warns).
        multiarray = getattr(getattr(numpy, "_core", None), "multiarray", None) or numpy.core.multiarray
        return getattr(multiarray, name, None)
    if module == "numpy" and name in ("ndarray", "dtype"):
        import numpy

        return getattr(numpy, name)
    if module == "_codecs" and name == "encode":
        import _codecs

        return _codecs.encode
    if module in ("builtins", "__builtin__") and name in ("set", "frozenset", "complex", "slice", "bytearray", "range"):
        import builtins

        return getattr(builtins, name)
    return None


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals of tensors and plain data; anything else becomes an inert `Refused` class."""

    def find_class(self, module: str, name: str) -> Any:
        found = _safe_global(module, name)
        return found if found is not None else _refused_class(module, name)


class _RestrictedPickleModule:
    """The `pickle_module` torch.load takes: pickle with the restricted Unpickler."""

    __name__ = "poseloop_restricted_pickle"
    Unpickler = RestrictedUnpickler
    UnpicklingError = pickle.UnpicklingError

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return RestrictedUnpickler(file, **kwargs).load()


class _ProbeHit(Exception):
    pass


class _ProbePickleModule:
    """A pickle_module that only says it was used."""

    __name__ = "poseloop_probe_pickle"

    class Unpickler(pickle.Unpickler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise _ProbeHit()

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        raise _ProbeHit()


_honored: Optional[bool] = None


def _pickle_module_honored() -> bool:
    """Whether torch.load uses the pickle_module it is given (torch 1.13 silently uses pickle instead)."""
    global _honored
    if _honored is None:
        import torch

        buffer = io.BytesIO()
        torch.save(torch.zeros(1), buffer)
        buffer.seek(0)
        try:
            torch.load(buffer, map_location="cpu", pickle_module=_ProbePickleModule, weights_only=False)
            _honored = False
        except _ProbeHit:
            _honored = True
        except Exception:  # noqa: BLE001 - e.g. TORCH_FORCE_WEIGHTS_ONLY_LOAD refuses any pickle_module
            _honored = False
    return _honored


def _restricted_load(path: str) -> Any:
    import torch
    import torch.serialization as serialization

    if _pickle_module_honored():
        return torch.load(path, map_location="cpu", pickle_module=_RestrictedPickleModule, weights_only=False)
    private = ("_is_zipfile", "_open_zipfile_reader", "_load", "_legacy_load")
    if not all(hasattr(serialization, name) for name in private):
        raise pickle.UnpicklingError("this torch cannot read the file with a restricted unpickler")
    # torch 1.13: its own readers of both formats, which do use the pickle module they are given.
    with open(path, "rb") as file:
        if serialization._is_zipfile(file):
            with serialization._open_zipfile_reader(file) as archive:
                return serialization._load(archive, "cpu", _RestrictedPickleModule, encoding="utf-8")
        return serialization._legacy_load(file, "cpu", _RestrictedPickleModule, encoding="utf-8")


def _torchscript_archive(path: str) -> bool:
    """torch.load hands TorchScript archives to torch.jit.load, weights_only or not: they are refused first."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist())


def load_file(path: str) -> Any:
    """Reads a torch.save file without running anything in it."""
    import torch

    if _torchscript_archive(path):
        raise pickle.UnpicklingError("a TorchScript archive, not a state_dict file (save model.state_dict() instead)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # weights_only refuses some plain metadata (numpy arrays in mmpose 1.x's meta) and names no key; the
        # restricted unpickler reads it, keeps anything unknown inert and lets the mapping say where it was.
        return _restricted_load(path)


def _describe(value: Any) -> str:
    if isinstance(value, Refused):
        return f"a {value.qualname} object (refused, not run)"
    if isinstance(value, type) and issubclass(value, Refused):
        return f"{value.qualname} (refused, not run)"
    return f"a {type(value).__name__}"


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def unwrap(loaded: Any, problems: List[str]) -> Optional[Dict[str, Any]]:
    """The state dict inside a checkpoint: the dict with tensors, possibly under state_dict / model keys."""
    current = loaded
    for _ in range(3):
        if not isinstance(current, dict):
            problems.append(f"the file holds {_describe(current)}, not a state dict")
            return None
        if any(_is_tensor(v) for v in current.values()):
            return current
        wrapped = next((current[k] for k in WRAPPER_KEYS if k in current), None)
        if wrapped is None and any(isinstance(k, str) and "." in k for k in current.keys()):
            return current  # tensor names without tensors: the mapping says what each one holds instead
        if wrapped is None:
            keys = ", ".join(sorted(str(k) for k in current.keys())[:10])
            problems.append(f"the file holds a dict without tensors (keys: {keys or 'none'}), not a state dict")
            return None
        current = wrapped
    problems.append("the file nests state dicts too deeply")
    return None


def _strip_module(key: str) -> str:
    while key.startswith("module."):
        key = key[len("module.") :]
    return key


def _candidates(key: str) -> List[str]:
    """The names a file key may have in the zoo, best first."""
    names = [key]
    if key.startswith("backbone."):
        names.append(key[len("backbone.") :])
    for prefix in HEAD_PREFIXES:
        if key.startswith(prefix):
            names.append(key[len(prefix) :])
    return names


def _fmt(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(int(d)) for d in shape) + "]"


def _last_fuse_module(target_names: Sequence[str]) -> Optional[Tuple[int, int]]:
    """(stage, module) of HRNet's last module, whose fuse layers the pose model keeps only row 0 of."""
    last: Optional[Tuple[int, int]] = None
    for name in target_names:
        m = re.match(r"^stage(\d+)\.(\d+)\.", name)
        if m:
            here = (int(m.group(1)), int(m.group(2)))
            if last is None or here > last:
                last = here
    return last


def map_state_dict(
    state: Dict[str, Any],
    architecture: str,
    targets: Sequence[Tuple[str, Sequence[int]]],
    skip: Sequence[str] = (),
) -> Tuple[List[str], List[str], List[str], "collections.OrderedDict[str, Any]"]:
    """Maps a state dict onto the targets: (problems, ignored file keys, skipped targets, mapped tensors)."""
    problems: List[str] = []
    ignored: List[str] = []
    shapes = {name: [int(d) for d in shape] for name, shape in targets}
    target_names = [name for name, _ in targets]

    for prefix in skip:
        if not any(name.startswith(prefix) for name in target_names):
            problems.append(f"skip {prefix!r}: matches no parameter or buffer of the model")

    normalized: List[Tuple[str, str, Any]] = []  # (original key, normalized key, value)
    for key, value in state.items():
        key = str(key)
        if key.endswith("num_batches_tracked"):
            continue
        normalized.append((key, _strip_module(key), value))

    def classification_head(key: str) -> bool:
        return any(c.startswith(CLASSIFICATION_PREFIXES) or CLASSIFICATION_FINAL.match(c) for c in _candidates(key))

    # mmpretrain's ImageNet checkpoints: backbone.* with head.fc.* (and HRNet's neck.*).
    classification = any(any(c.startswith(CLASSIFICATION_PREFIXES) for c in _candidates(n)) for _, n, _ in normalized)
    auto_skip = POSE_HEADS.get(architecture, ()) if classification else ()
    last_module = _last_fuse_module(target_names) if architecture == "hrnet" else None

    def skipped_target(name: str) -> bool:
        return name.startswith(tuple(skip)) or name.startswith(auto_skip)

    found: Dict[str, Tuple[str, Any]] = {}
    claimed = set()  # targets some file key names, loadable or not (so a mis-shaped one is not also "missing")
    for original, key, value in normalized:
        target = next((c for c in _candidates(key) if c in shapes), None)
        if target is None:
            if classification and (classification_head(key) or key.startswith("neck.")):
                ignored.append(original)
                continue
            fuses = [f for f in (FUSE_KEY.match(c) for c in _candidates(key)) if f]
            if classification and any(last_module == (int(f.group(1)), int(f.group(2))) and int(f.group(3)) >= 1 for f in fuses):
                ignored.append(original)  # the multi-scale fuse rows of a classification net's last module
                continue
            problems.append(f"{original}: in the file, not in the model")
            continue
        if skipped_target(target):
            ignored.append(original)
            continue
        claimed.add(target)
        if target in found:
            problems.append(f"{target}: in the file twice ({found[target][0]} and {original})")
            continue
        if not _is_tensor(value):
            problems.append(f"{original}: {_describe(value)}, not a tensor")
            continue
        if value.is_quantized or value.is_sparse or not value.is_floating_point():
            problems.append(f"{original}: a {value.dtype} tensor, not a dense floating-point one")
            continue
        if list(value.shape) != shapes[target]:
            problems.append(f"{original}: shape {_fmt(value.shape)} in the file, the model needs {_fmt(shapes[target])}")
            continue
        found[target] = (original, value)

    skipped: List[str] = []
    mapped: "collections.OrderedDict[str, Any]" = collections.OrderedDict()
    for name in target_names:
        if skipped_target(name):
            skipped.append(name)
        elif name in found:
            mapped[name] = found[name][1]
        elif name not in claimed:
            problems.append(f"{name}: not in the file")
    return problems, ignored, skipped, mapped


def handle(request: Dict[str, Any]) -> Tuple[Dict[str, Any], "collections.OrderedDict[str, Any]"]:
    """The answer header and the tensors to send for one request."""
    problems: List[str] = []
    path = request.get("file")
    architecture = request.get("architecture")
    targets = request.get("targets")
    skip = request.get("skip") or []
    if not isinstance(path, str) or not path:
        problems.append("file: missing")
    if architecture not in ARCHITECTURES:
        problems.append(f"architecture: must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}")
    if not isinstance(targets, list) or not all(
        isinstance(t, list) and len(t) == 2 and isinstance(t[0], str) and isinstance(t[1], list) for t in targets
    ):
        problems.append("targets: must be a list of [name, shape]")
    if not isinstance(skip, list) or not all(isinstance(s, str) and s for s in skip):
        problems.append("skip: must be a list of non-empty name prefixes")
    if problems:
        return {"ok": False, "problems": problems}, collections.OrderedDict()
    if not os.path.isfile(path):
        return {"ok": False, "problems": [f"{os.path.basename(path)}: no such file"]}, collections.OrderedDict()
    try:
        loaded = load_file(path)
    except Exception as error:  # noqa: BLE001 - every reason a file is unreadable is the user's problem to see
        why = f"not a PyTorch state_dict file torch can read ({type(error).__name__}: {error})"
        return {"ok": False, "problems": [why]}, collections.OrderedDict()
    state = unwrap(loaded, problems)
    if state is None:
        return {"ok": False, "problems": problems}, collections.OrderedDict()
    problems, ignored, skipped, mapped = map_state_dict(state, architecture, [(n, s) for n, s in targets], skip)
    if problems:
        return {"ok": False, "problems": problems}, collections.OrderedDict()
    header = {
        "ok": True,
        "mapped": len(mapped),
        "ignored": ignored,
        "skipped": skipped,
        "tensors": [[name, list(value.shape)] for name, value in mapped.items()],
    }
    return header, mapped


def write_answer(out: Any, header: Dict[str, Any], tensors: "collections.OrderedDict[str, Any]") -> None:
    import torch

    out.write((json.dumps(header) + "\n").encode("utf-8"))
    for value in tensors.values():
        array = value.detach().to(dtype=torch.float32).contiguous().numpy()
        out.write(array.astype("<f4", copy=False).tobytes())
    out.flush()


def main() -> int:
    # stdout carries the answer alone: anything imported that prints goes to stderr.
    out = sys.stdout.buffer
    sys.stdout = sys.stderr
    try:
        request = json.loads(sys.stdin.buffer.read().decode("utf-8"))
        if not isinstance(request, dict):
            raise ValueError("the request is not a JSON object")
    except ValueError as error:
        write_answer(out, {"ok": False, "problems": [f"bad request: {error}"]}, collections.OrderedDict())
        return 2
    try:
        import torch  # noqa: F401
    except ImportError as error:
        write_answer(out, {"ok": False, "problems": [f"torch cannot be imported: {error}"]}, collections.OrderedDict())
        return 3
    header, tensors = handle(request)
    write_answer(out, header, tensors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
