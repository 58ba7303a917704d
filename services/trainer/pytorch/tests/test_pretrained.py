"""Pretrained-weight import: reference, MMPose and ImageNet files map onto the zoo's names; bad files list every
problem; pickles that would run code are refused without running it.

The files are built here, with the names the reference pose_hrnet.py gives its modules (stem conv1/bn1/conv2/bn2,
layer1 bottlenecks, transitionN.i[.j].{0,1}, stageN.M.branches.b.k.*, stageN.M.fuse_layers.i.j[.k].{0,1},
final_layer), for a small width.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from poseloop_torch import pretrained  # noqa: E402

STEM, PLANES, JOINTS = 8, 8, 17
STAGES = [(1, [4, 8]), (2, [4, 8, 16]), (1, [4, 8, 16, 32])]  # (modules, channels per branch), one block each


def _conv(out, cin, k, bias=False):
    spec = [("weight", [out, cin, k, k])]
    return spec + ([("bias", [out])] if bias else [])


def _bn(c, tracked=True):
    spec = [("weight", [c]), ("bias", [c]), ("running_mean", [c]), ("running_var", [c])]
    return spec + ([("num_batches_tracked", [])] if tracked else [])


def reference_hrnet(classification=False):
    """[(name, shape)] of a reference pose_hrnet state_dict (or of HRNet-Image-Classification's, which keeps every
    fuse row of its last module and has a classification head instead of final_layer)."""
    out = []

    def add(prefix, spec):
        out.extend((f"{prefix}.{n}", s) for n, s in spec)

    def block(prefix, cin, planes, bottleneck):
        if bottleneck:
            add(f"{prefix}.conv1", _conv(planes, cin, 1)), add(f"{prefix}.bn1", _bn(planes))
            add(f"{prefix}.conv2", _conv(planes, planes, 3)), add(f"{prefix}.bn2", _bn(planes))
            add(f"{prefix}.conv3", _conv(planes * 4, planes, 1)), add(f"{prefix}.bn3", _bn(planes * 4))
            width = planes * 4
        else:
            add(f"{prefix}.conv1", _conv(planes, cin, 3)), add(f"{prefix}.bn1", _bn(planes))
            add(f"{prefix}.conv2", _conv(planes, planes, 3)), add(f"{prefix}.bn2", _bn(planes))
            width = planes
        if cin != width:
            add(f"{prefix}.downsample.0", _conv(width, cin, 1)), add(f"{prefix}.downsample.1", _bn(width))
        return width

    add("conv1", _conv(STEM, 3, 3)), add("bn1", _bn(STEM)), add("conv2", _conv(STEM, STEM, 3)), add("bn2", _bn(STEM))
    width = STEM
    for b in range(4):
        width = block(f"layer1.{b}", width, PLANES, True)
    previous = [width]
    for s, (modules, channels) in enumerate(STAGES):
        for i, c in enumerate(channels):
            name = f"transition{s + 1}.{i}"
            if i < len(previous):
                if previous[i] != c:
                    add(f"{name}.0", _conv(c, previous[i], 3)), add(f"{name}.1", _bn(c))
            else:
                for j in range(i + 1 - len(previous)):
                    last = j == i - len(previous)
                    cout = c if last else previous[-1]
                    add(f"{name}.{j}.0", _conv(cout, previous[-1], 3)), add(f"{name}.{j}.1", _bn(cout))
        for m in range(modules):
            name = f"stage{s + 2}.{m}"
            for b, c in enumerate(channels):
                block(f"{name}.branches.{b}.0", c, c, False)
            final = s == len(STAGES) - 1 and m == modules - 1
            rows = len(channels) if classification or not final else 1
            for i in range(rows):
                for j, cj in enumerate(channels):
                    ci = channels[i]
                    if j > i:
                        add(f"{name}.fuse_layers.{i}.{j}.0", _conv(ci, cj, 1)), add(f"{name}.fuse_layers.{i}.{j}.1", _bn(ci))
                    for k in range(i - j):
                        cout = ci if k == i - j - 1 else cj
                        add(f"{name}.fuse_layers.{i}.{j}.{k}.0", _conv(cout, cj, 3))
                        add(f"{name}.fuse_layers.{i}.{j}.{k}.1", _bn(cout))
        previous = channels
    if classification:
        for i, c in enumerate(previous):
            block(f"incre_modules.{i}.0", c, 32 * 2**i, True)
        for i in range(3):
            add(f"downsamp_modules.{i}.0", _conv(256 * 2**i, 128 * 2**i, 3, bias=True))
            add(f"downsamp_modules.{i}.1", _bn(256 * 2**i))
        add("final_layer.0", _conv(2048, 1024, 1, bias=True)), add("final_layer.1", _bn(2048))
        out.extend([("classifier.weight", [1000, 2048]), ("classifier.bias", [1000])])
    else:
        add("final_layer", _conv(JOINTS, previous[0], 1, bias=True))
    return out


def zoo_targets():
    """The zoo model's params and buffers ([name, shape]), as libs/train's registry lists them."""
    return [[n, s] for n, s in reference_hrnet() if not n.endswith("num_batches_tracked")]


def state_of(spec, seed=0, transform=lambda name: name):
    generator = torch.Generator().manual_seed(seed)
    state = collections.OrderedDict()
    for name, shape in spec:
        if name.endswith("num_batches_tracked"):
            state[transform(name)] = torch.tensor(7, dtype=torch.long)
        else:
            state[transform(name)] = torch.randn(shape, generator=generator)
    return state


class Malicious:
    """Pickles as a call that would leave a marker file behind."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Opaque:
    """A plain class instance (pickled by module and name)."""

    def __init__(self):
        self.payload = [1, 2, 3]


class PretrainedTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)

    def save(self, obj, name="weights.pth", legacy=False):
        path = os.path.join(self.dir.name, name)
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
        return path

    def request(self, path, skip=(), architecture="hrnet", targets=None):
        return pretrained.handle({"file": path, "architecture": architecture, "targets": targets or zoo_targets(), "skip": list(skip)})

    def assert_complete(self, header, tensors, state, key_of):
        self.assertTrue(header["ok"], header.get("problems"))
        targets = zoo_targets()
        self.assertEqual(header["mapped"], len(targets))
        self.assertEqual([t[0] for t in header["tensors"]], [t[0] for t in targets])
        for name, shape in targets:
            self.assertEqual(list(tensors[name].shape), shape)
            self.assertTrue(torch.equal(tensors[name], state[key_of(name)]), name)

    def test_reference_file_with_dataparallel_prefix_maps_completely_over_the_wire(self):
        state = state_of(reference_hrnet(), transform=lambda n: f"module.{n}")
        path = self.save(state)
        env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE))
        request = {"file": path, "architecture": "hrnet", "targets": zoo_targets()}
        done = subprocess.run(
            [sys.executable, "-m", "poseloop_torch.pretrained"], input=json.dumps(request).encode(), capture_output=True, env=env, timeout=120
        )
        self.assertEqual(done.returncode, 0, done.stderr.decode())
        line, _, body = done.stdout.partition(b"\n")
        header = json.loads(line)
        self.assertTrue(header["ok"], header.get("problems"))
        self.assertEqual(header["mapped"], len(zoo_targets()))
        self.assertEqual(header["ignored"], [])
        offset = 0
        for name, shape in header["tensors"]:
            count = int(numpy.prod(shape))
            values = numpy.frombuffer(body, dtype="<f4", count=count, offset=offset).reshape(shape)
            offset += 4 * count
            numpy.testing.assert_array_equal(values, state[f"module.{name}"].numpy())
        self.assertEqual(offset, len(body))

    def test_legacy_serialization_and_zoo_names(self):
        state = state_of(reference_hrnet(), seed=1)
        header, tensors = self.request(self.save(state, legacy=True))
        self.assert_complete(header, tensors, state, lambda n: n)

    def test_mmpose_0x_checkpoint_with_meta_maps(self):
        def rename(name):
            return f"module.keypoint_head.{name}" if name.startswith("final_layer") else f"module.backbone.{name}"

        state = state_of(reference_hrnet(), seed=2, transform=rename)
        meta = {"mmpose_version": "0.29.0", "epoch": 210, "config": "model = dict(type='TopDown')", "sigmas": numpy.array([0.026, 0.025])}
        header, tensors = self.request(self.save({"meta": meta, "state_dict": state}))
        self.assert_complete(header, tensors, state, rename)

    def test_mmpose_1x_checkpoint_maps(self):
        def rename(name):
            return f"head.{name}" if name.startswith("final_layer") else f"backbone.{name}"

        state = state_of(reference_hrnet(), seed=3, transform=rename)
        header, tensors = self.request(self.save({"model": state}))
        self.assert_complete(header, tensors, state, rename)

    def test_imagenet_backbone_ignores_classification_head_and_keeps_final_layer_init(self):
        state = state_of(reference_hrnet(classification=True), seed=4)
        header, tensors = self.request(self.save(state))
        self.assertTrue(header["ok"], header.get("problems"))
        self.assertEqual(header["skipped"], ["final_layer.weight", "final_layer.bias"])
        self.assertNotIn("final_layer.weight", tensors)
        self.assertEqual(header["mapped"], len(zoo_targets()) - 2)
        self.assertIn("classifier.weight", header["ignored"])
        self.assertIn("final_layer.0.weight", header["ignored"])
        self.assertIn("incre_modules.0.0.conv1.weight", header["ignored"])
        self.assertIn("stage4.0.fuse_layers.3.0.2.0.weight", header["ignored"])
        self.assertTrue(torch.equal(tensors["stage4.0.fuse_layers.0.3.0.weight"], state["stage4.0.fuse_layers.0.3.0.weight"]))

    def test_mmpretrain_imagenet_backbone_ignores_its_head(self):
        spec = reference_hrnet(classification=True)
        state = state_of(spec, seed=7, transform=lambda n: n.replace("classifier.", "head.fc.") if n.startswith("classifier.") else f"backbone.{n}")
        header, tensors = self.request(self.save({"meta": {}, "state_dict": state}))
        self.assertTrue(header["ok"], header.get("problems"))
        self.assertIn("head.fc.weight", header["ignored"])
        self.assertEqual(header["mapped"], len(zoo_targets()) - 2)

    def test_wrong_file_lists_every_problem(self):
        state = state_of(reference_hrnet(), seed=5)
        del state["stage4.0.fuse_layers.0.3.1.running_var"]
        state["layer1.0.conv2.weight"] = torch.zeros(8, 8, 1, 1)
        state["foo.bar"] = torch.zeros(3)
        header, _ = self.request(self.save(state))
        self.assertFalse(header["ok"])
        self.assertEqual(
            sorted(header["problems"]),
            sorted(
                [
                    "layer1.0.conv2.weight: shape [8,8,1,1] in the file, the model needs [8,8,3,3]",
                    "foo.bar: in the file, not in the model",
                    "stage4.0.fuse_layers.0.3.1.running_var: not in the file",
                ]
            ),
        )

    def test_skip_prefix_leaves_a_mis_shaped_head_alone(self):
        state = state_of(reference_hrnet(), seed=6)
        state["final_layer.weight"] = torch.zeros(21, 4, 1, 1)
        state["final_layer.bias"] = torch.zeros(21)
        header, _ = self.request(self.save(state))
        self.assertEqual(len(header["problems"]), 2)
        header, tensors = self.request(self.save(state), skip=["final_layer."])
        self.assertTrue(header["ok"], header.get("problems"))
        self.assertEqual(header["skipped"], ["final_layer.weight", "final_layer.bias"])
        self.assertEqual(sorted(header["ignored"]), ["final_layer.bias", "final_layer.weight"])
        self.assertNotIn("final_layer.bias", tensors)
        header, _ = self.request(self.save(state), skip=["final_layers."])
        self.assertIn("skip 'final_layers.': matches no parameter or buffer of the model", header["problems"])

    def test_code_in_the_pickle_is_refused_without_running(self):
        marker = os.path.join(self.dir.name, "ran")
        for obj in (Malicious(marker), {"state_dict": {"conv1.weight": Malicious(marker)}}, {"bn1.weight": torch.zeros(8), "conv1.weight": Opaque()}):
            header, _ = self.request(self.save(obj))
            self.assertFalse(header["ok"])
            self.assertTrue(any("refused, not run" in p for p in header["problems"]), header["problems"])
        self.assertFalse(os.path.exists(marker), "the pickle's call ran")
        header, _ = self.request(self.save(Malicious(marker)))
        self.assertEqual(header["problems"], [f"the file holds a {os.system.__module__}.system object (refused, not run), not a state dict"])

    def test_torchscript_archive_is_refused(self):
        path = os.path.join(self.dir.name, "scripted.pt")
        torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 8, 3, bias=False)), path)
        header, _ = self.request(path)
        self.assertFalse(header["ok"])
        self.assertIn("a TorchScript archive, not a state_dict file", header["problems"][0])

    def test_unreadable_and_missing_files(self):
        path = os.path.join(self.dir.name, "junk.pth")
        with open(path, "wb") as f:
            f.write(b"not a checkpoint")
        header, _ = self.request(path)
        self.assertFalse(header["ok"])
        self.assertIn("not a PyTorch state_dict file", header["problems"][0])
        header, _ = self.request(os.path.join(self.dir.name, "absent.pth"))
        self.assertEqual(header["problems"], ["absent.pth: no such file"])


if __name__ == "__main__":
    unittest.main()
