"""poseloop_torch.data.batch and .loader against libs/data's TopDownBatchBuilder.

tests/fixtures/data-reference-c.json holds batches the TypeScript builder made of the images under
tests/fixtures/data-c/ (regenerate both with tests/fixtures/data_reference_c.ts, command inside).
"""
from __future__ import annotations

import base64
import copy
import gc
import json
import os
import time
import unittest
from pathlib import Path
from typing import Any

import numpy as np

from poseloop_torch.data.batch import TopDownBatchBuilder
from poseloop_torch.data.images import DataError
from poseloop_torch.data.loader import EngineDataLoader
from poseloop_torch.data.seeded_random import epoch_order

FIXTURES = Path(__file__).resolve().parent / "fixtures"
REFERENCE = json.loads((FIXTURES / "data-reference-c.json").read_text())
# @poseloop/core's Code numbers as the fixture stores them, by the names DataError carries.
CODE_NAMES = {3: "INVALID_ARGUMENT", 5: "NOT_FOUND", 15: "DATA_LOSS"}
# JPEG decoders (sharp's libjpeg-turbo, PIL's libjpeg) may round IDCT and chroma upsampling differently: allow
# 3 levels of 255 through the smallest ImageNet std. The PNG copies hold sharp's pixels and must match exactly.
JPEG_TOLERANCE = 3 / 57.12
FLOAT_TOLERANCE = 1e-5


def case(name: str) -> dict[str, Any]:
    return next(c for c in REFERENCE["cases"] if c["name"] == name)


def config_of(name: str, png: bool = False) -> dict[str, Any]:
    """The case's BatchBuilderConfig with absolute image paths (the PNG copies instead of the JPEGs if asked)."""
    config = copy.deepcopy(case(name)["config"])
    paths = config["table"]["imagePaths"]
    if png:
        paths = REFERENCE["pngImagePaths"] + paths[len(REFERENCE["pngImagePaths"]):]
    config["table"]["imagePaths"] = [str(FIXTURES / path) for path in paths]
    return config


def floats(text: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").reshape(shape)


def expected_skipped(batch: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**skipped, "code": CODE_NAMES[skipped["code"]]} for skipped in batch["skipped"]]


def worker_pids() -> set[int]:
    """Spawned children of this process (multiprocessing's resource tracker, also a child, is not a worker)."""
    pids: set[int] = set()
    # Threads (the loader's own among them) and children may exit while they are being listed.
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except FileNotFoundError:
            continue
        for pid in children:
            try:
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.add(int(pid))
            except FileNotFoundError:
                pass
    return pids


def wait_until_gone(pids: set[int]) -> list[int]:
    """The processes of `pids` still alive after a grace period for their exit."""
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return sorted(pid for pid in pids if alive(pid))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


class BatchBuilderTest(unittest.TestCase):
    def assert_batches_match(self, name: str, png: bool, image_tolerance: float) -> float:
        """Builds every batch of the case; returns the largest image difference."""
        builder = TopDownBatchBuilder(config_of(name, png))
        worst = 0.0
        for reference in case(name)["batches"]:
            batch = builder.build(reference["epoch"], reference["index"], reference["samples"])
            n, k, h, w = batch.targets.shape
            self.assertEqual(batch.images.shape, (n, 3, 32, 24))
            images = floats(reference["images"], batch.images.shape)
            difference = float(np.abs(batch.images - images).max())
            worst = max(worst, difference)
            self.assertLessEqual(difference, image_tolerance, f"{name} epoch {reference['epoch']}: images differ by {difference}")
            np.testing.assert_allclose(batch.targets, floats(reference["targets"], (n, k, h, w)), rtol=0, atol=FLOAT_TOLERANCE)
            np.testing.assert_allclose(batch.target_weights, floats(reference["targetWeights"], (n, k)), rtol=0, atol=FLOAT_TOLERANCE)
            self.assertEqual(batch.skipped, expected_skipped(reference))
        return worst

    def test_plain_msra_batch_is_the_typescript_batch(self) -> None:
        self.assert_batches_match("plain", png=True, image_tolerance=FLOAT_TOLERANCE)
        self.assert_batches_match("plain", png=False, image_tolerance=JPEG_TOLERANCE)

    def test_augmented_udp_batches_of_two_epochs_are_the_typescript_batches(self) -> None:
        # Flip, rotation, scale, half body, colour jitter and both kinds of occlusion all occur in these samples.
        self.assert_batches_match("augmented", png=True, image_tolerance=FLOAT_TOLERANCE)
        self.assert_batches_match("augmented", png=False, image_tolerance=JPEG_TOLERANCE)

    def test_plans_are_the_typescript_epoch_orders(self) -> None:
        reference = case("augmented")
        count = reference["config"]["table"]["count"]
        for batch in reference["batches"]:
            order = epoch_order(count, reference["config"]["seed"], batch["epoch"], True)
            self.assertEqual(list(order[:reference["batchSize"]]), batch["samples"])

    def test_skip_policy_lists_the_missing_image_and_the_nan_keypoint(self) -> None:
        [reference] = case("skip")["batches"]
        self.assertEqual(
            [(s["code"], s["message"]) for s in expected_skipped(reference)],
            [("NOT_FOUND", "image 2 (train/missing.jpg) not found"),
             ("INVALID_ARGUMENT", "image 3 (train/000000000003.jpg): keypoint 0 (nose) of annotation 3 is not a finite number")])
        self.assert_batches_match("skip", png=False, image_tolerance=JPEG_TOLERANCE)
        batch = TopDownBatchBuilder(config_of("skip")).build(0, 0, reference["samples"])
        self.assertFalse(batch.images[1:3].any() or batch.targets[1:3].any() or batch.target_weights[1:3].any())

    def test_fail_policy_raises_the_first_bad_sample(self) -> None:
        config = config_of("skip")
        config["badSamples"] = "fail"
        with self.assertRaises(DataError) as raised:
            TopDownBatchBuilder(config).build(0, 0, [0, 1, 2])
        self.assertEqual((raised.exception.code, raised.exception.message), ("NOT_FOUND", "image 2 (train/missing.jpg) not found"))


def plan(epoch: int, batches: int, size: int) -> list[tuple[int, list[int]]]:
    order = [int(s) for s in epoch_order(6, 3, epoch, True)]
    return [(index, [order[(index * size + j) % 6] for j in range(size)]) for index in range(batches)]


def load(loader: EngineDataLoader, epochs: list[int], batches: int, size: int) -> list[Any]:
    built = []
    for epoch in epochs:
        loader.start(epoch, plan(epoch, batches, size))
        built.extend(loader.next(epoch, index) for index in range(batches))
    return built


class EngineDataLoaderTest(unittest.TestCase):
    def test_workers_build_the_batches_of_this_process_in_order_and_stop_on_close(self) -> None:
        config = config_of("augmented")
        with EngineDataLoader(config, workers=0, prefetch=2, blocks=[0, 1], block_size=2) as loader:
            in_process = load(loader, [0, 1], batches=4, size=4)
        before = worker_pids()
        # Four batches per worker: each worker's ring of prefetch + 2 shared buffers is reused.
        loader = EngineDataLoader(config, workers=2, prefetch=1, blocks=[0, 1], block_size=2)
        in_workers = load(loader, [0, 1], batches=4, size=4)
        workers = worker_pids() - before
        self.assertEqual(len(workers), 2)
        self.assertEqual(len(in_workers), len(in_process))
        for a, b in zip(in_process, in_workers):
            self.assertEqual((a.epoch, a.index, list(a.samples)), (b.epoch, b.index, list(b.samples)))
            np.testing.assert_array_equal(a.images, b.images)
            np.testing.assert_array_equal(a.targets, b.targets)
            np.testing.assert_array_equal(a.target_weights, b.target_weights)
        loader.close()
        self.assertEqual(wait_until_gone(workers), [])

        with EngineDataLoader(config, workers=0, prefetch=2, blocks=[1], block_size=2) as second_half:
            for whole, half in zip(in_process, load(second_half, [0, 1], batches=4, size=4)):
                self.assertEqual(list(half.samples), list(whole.samples[2:]))
                np.testing.assert_array_equal(half.images, whole.images[2:])
                np.testing.assert_array_equal(half.targets, whole.targets[2:])
                np.testing.assert_array_equal(half.target_weights, whole.target_weights[2:])

    def test_a_collected_loader_stops_its_workers(self) -> None:
        before = worker_pids()
        loader = EngineDataLoader(config_of("plain"), workers=1, prefetch=1, blocks=[0], block_size=2)
        loader.start(0, plan(0, 2, 2))
        loader.next(0, 0)
        workers = worker_pids() - before
        self.assertEqual(len(workers), 1)
        del loader
        gc.collect()
        self.assertEqual(wait_until_gone(workers), [])

    def test_only_the_planned_batch_comes_next(self) -> None:
        with EngineDataLoader(config_of("plain"), workers=0, prefetch=2, blocks=[0], block_size=2) as loader:
            with self.assertRaises(ValueError):
                loader.next(0, 0)
            loader.start(4, plan(4, 2, 2))
            with self.assertRaisesRegex(ValueError, "not the next planned one"):
                loader.next(4, 1)
            with self.assertRaisesRegex(ValueError, "not the next planned one"):
                loader.next(3, 0)
            loader.next(4, 0)
            loader.next(4, 1)
            with self.assertRaisesRegex(ValueError, "no planned batch is left"):
                loader.next(4, 2)

    def test_a_bad_sample_in_a_worker_fails_with_its_data_error(self) -> None:
        config = config_of("skip")
        config["badSamples"] = "fail"
        with EngineDataLoader(config, workers=1, prefetch=1, blocks=[0], block_size=2) as loader:
            loader.start(0, [(0, [0, 3]), (1, [1, 0])])
            loader.next(0, 0)
            with self.assertRaises(DataError) as raised:
                loader.next(0, 1)
        self.assertEqual((raised.exception.code, raised.exception.message), ("NOT_FOUND", "image 2 (train/missing.jpg) not found"))


if __name__ == "__main__":
    unittest.main()
