"""The engine's own data loader behind the protocol (`data`, `plan`, steps that name their batch): the same
training as batches sent over the pipe, in one process and in two gloo ranks that each load their own share."""
import json
import os
import unittest

import numpy as np

import client
from poseloop_torch.data.batch import TopDownBatchBuilder
from poseloop_torch.data.seeded_random import epoch_order
from test_ddp import RTOL, relative_error

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
MODEL = {"architecture": "lite", "inputWidth": 24, "inputHeight": 32, "numKeypoints": 17, "lite": {"channels": [4, 8, 8]}}
TRAINING = {"batchSize": 2, "gradAccumSteps": 1, "clipGradNorm": 0.5, "optimizer": {"kind": "adamw"}}
EPOCHS = 3


def EngineProcess(**options):
    """The engine with the fixtures folder as its data root, as a trainer would set it."""
    return client.EngineProcess(env={"POSELOOP_DATA_ROOT": FIXTURES}, **options)


def augmented_config():
    """data_reference_c's augmented case (flip, rotation, scale, half body, occlusion, colour jitter, UDP targets)
    with its image paths as the `data` request sends them: relative to the data root."""
    with open(os.path.join(FIXTURES, "data-reference-c.json")) as f:
        case = next(c for c in json.load(f)["cases"] if c["name"] == "augmented")
    config = case["config"]
    config["table"]["imagePaths"] = [["data", path] for path in config["table"]["imagePaths"]]
    return config


def plan(config, epoch, global_batch):
    order = epoch_order(config["table"]["count"], config["seed"], epoch, True)
    return [[i, [int(s) for s in order[i * global_batch : (i + 1) * global_batch]]] for i in range(len(order) // global_batch)]


def train(engine, replicas, start, loader, workers=1):
    """EPOCHS epochs of planned steps (loader) or of the same batches sent as tensors; the results and weights."""
    config = augmented_config()
    engine.call("init", model=MODEL, training=TRAINING, device="cpu", amp=False, replicas=replicas, threads=1)
    engine.call("set_state", dict(start), step=0, microStep=0)
    if loader:
        ready, _ = engine.call("data", config=config, workers=workers, prefetch=2)
        assert ready["samples"] == config["table"]["count"], ready
    builder = None if loader else TopDownBatchBuilder({**config, "table": {**config["table"], "imagePaths": [os.path.join(FIXTURES, p) for _, p in config["table"]["imagePaths"]]}})
    results = []
    for epoch in range(EPOCHS):
        batches = plan(config, epoch, TRAINING["batchSize"] * replicas)
        if loader:
            engine.call("plan", epoch=epoch, batches=batches)
        for index, samples in batches:
            if loader:
                results.append(engine.call("step", lr=1e-3, batch={"epoch": epoch, "index": index})[0])
            else:
                built = builder.build(epoch, index, samples)
                results.append(engine.call("step", {"images": built.images, "targets": built.targets, "target_weights": built.target_weights}, lr=1e-3)[0])
    _, weights = engine.call("get_weights")
    return results, weights


class EngineDataTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with EngineProcess() as engine:
            engine.call("init", model=MODEL, training=TRAINING, device="cpu", amp=False, replicas=2, threads=1)
            _, cls.start = engine.call("get_weights")

    def test_planned_steps_equal_batches_sent_over_the_pipe(self):
        with EngineProcess() as sent:
            expected, expected_weights = train(sent, 2, self.start, loader=False)
        with EngineProcess() as planned:
            results, weights = train(planned, 2, self.start, loader=True)
        self.assertEqual(len(results), len(expected))
        for a, b in zip(results, expected):
            # The same arrays through the same step: bit for bit.
            self.assertEqual((a["loss"], a["gradNorm"], a["step"]), (b["loss"], b["gradNorm"], b["step"]))
        for name, value in expected_weights.items():
            np.testing.assert_array_equal(weights[name], value, err_msg=name)

    def test_two_ranks_loading_their_own_share_equal_one_process_with_two_replicas(self):
        with EngineProcess() as single:
            results1, weights1 = train(single, 2, self.start, loader=True, workers=0)
        with EngineProcess(nproc=2) as ranks:
            results2, weights2 = train(ranks, 2, self.start, loader=True)
            self.assertEqual(ranks.call("shutdown")[0]["type"], "bye")
            self.assertEqual(ranks.proc.wait(60), 0)
        for a, b in zip(results1, results2):
            self.assertAlmostEqual(a["loss"], b["loss"], delta=RTOL * abs(a["loss"]))
        for name in weights1:
            self.assertLess(relative_error(weights2[name], weights1[name]), RTOL, name)

    def test_refuses_what_it_cannot_load_and_a_step_off_the_plan(self):
        config = augmented_config()
        with EngineProcess() as engine:
            engine.call("init", model=MODEL, training=TRAINING, device="cpu", amp=False, replicas=1, threads=1)
            error = engine.request("step", lr=1e-3, batch={"epoch": 0, "index": 0})[0]
            self.assertEqual((error["type"], error["code"]), ("error", "FAILED_PRECONDITION"))
            wrong = {**config, "inputSize": {"width": 48, "height": 64}}
            error = engine.request("data", config=wrong, workers=0, prefetch=2)[0]
            self.assertEqual(error["code"], "INVALID_ARGUMENT")
            self.assertIn("input size 48x64 is not the model's 24x32", error["message"])
            for path in (["data", "../fixtures/data-c/train/000000000001.jpg"], ["data", "/etc/passwd"], ["", "/etc/passwd"]):
                outside = {**config, "table": {**config["table"], "imagePaths": [path, *config["table"]["imagePaths"][1:]]}}
                error = engine.request("data", config=outside, workers=0, prefetch=2)[0]
                self.assertEqual(error["code"], "INVALID_ARGUMENT", path)
            skip = {**config, "badSamples": "skip"}
            self.assertEqual(engine.request("data", config=skip, workers=0, prefetch=2)[0]["code"], "INVALID_ARGUMENT")
            engine.call("data", config=config, workers=0, prefetch=2)
            error = engine.request("plan", epoch=0, batches=[[0, [0, 99]]])[0]
            self.assertEqual(error["code"], "INVALID_ARGUMENT")
            self.assertIn("names sample 99", error["message"])
            engine.call("plan", epoch=0, batches=plan(config, 0, 2))
            error = engine.request("step", lr=1e-3, batch={"epoch": 0, "index": 1})[0]
            self.assertEqual(error["code"], "FAILED_PRECONDITION")
            # The engine goes on: the planned batch is still next.
            self.assertTrue(engine.call("step", lr=1e-3, batch={"epoch": 0, "index": 0})[0]["updated"])

    def test_a_missing_image_fails_its_step_on_every_rank_alike_naming_it(self):
        config = augmented_config()
        config["table"]["imagePaths"][0] = ["data", "data-c/train/gone.jpg"]
        with EngineProcess(nproc=2) as ranks:
            ranks.call("init", model=MODEL, training=TRAINING, device="cpu", amp=False, replicas=2, threads=1)
            ranks.call("data", config=config, workers=0, prefetch=2)
            first = config["table"]["imageIndex"].index(0)
            ranks.call("plan", epoch=0, batches=[[0, [first, *[i for i in range(config["table"]["count"]) if i != first][:3]]]])
            error = ranks.request("step", lr=1e-3, batch={"epoch": 0, "index": 0})[0]
            self.assertEqual(error["code"], "INVALID_ARGUMENT")
            self.assertIn("gone.jpg", error["message"])
            self.assertEqual(ranks.call("shutdown")[0]["type"], "bye")
            self.assertEqual(ranks.proc.wait(60), 0)


if __name__ == "__main__":
    unittest.main()
