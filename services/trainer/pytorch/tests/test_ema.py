"""TRAIN.EMA in the PyTorch engine, through its protocol: the moving average against
torch.optim.swa_utils.AveragedModel, its place in the state (a resumed run is bit-identical), and its errors."""
import math
import unittest

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from client import EngineProcess
from poseloop_torch import zoo
from test_engine import TINY, tiny_batch, tiny_init, without_id

torch.set_num_threads(1)
EMA = {"decay": 0.9, "warmupUpdates": 3}


def ema_avg(averaged, current, num_averaged):
    """The documented decay (libs/train's emaDecay) as AveragedModel's avg_fn: the t-th update averages with n_averaged = t."""
    d = EMA["decay"] * (1 - math.exp(-float(num_averaged) / EMA["warmupUpdates"]))
    return averaged * d + current * (1 - d)


def load(model, weights):
    model.load_state_dict({k.split(":", 1)[1]: torch.from_numpy(v.copy()) for k, v in weights.items()}, strict=False)


class EmaTest(unittest.TestCase):
    def test_the_average_equals_averaged_model_with_buffers(self):
        """After every update (two micro-batches each) AveragedModel(use_buffers=True) takes the engine's raw
        weights; its average of parameters and BatchNorm statistics is the engine's."""
        reference = zoo.build_model(TINY)
        with EngineProcess() as engine:
            engine.call("init", **tiny_init(training={"gradAccumSteps": 2, "ema": EMA}))
            _, start = engine.call("get_weights")
            load(reference, start)
            averaged = AveragedModel(reference, avg_fn=ema_avg, use_buffers=True)
            averaged.update_parameters(reference)  # the first call copies: the average starts at the initial weights
            for i in range(6):
                result, _ = engine.call("step", tiny_batch(i), lr=0.05)
                if result["updated"]:
                    _, raw = engine.call("get_weights")
                    load(reference, raw)
                    averaged.update_parameters(reference)
            self.assertEqual(result["step"], 3)
            _, got = engine.call("get_weights", averaged=True)
            _, raw = engine.call("get_weights")
        expected = {f"ema:param:{n}": p.detach().numpy() for n, p in averaged.module.named_parameters()}
        expected.update({f"ema:buffer:{n}": b.numpy() for n, b in averaged.module.named_buffers() if not n.endswith("num_batches_tracked")})
        self.assertEqual(set(got), set(expected))
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, rtol=1e-6, atol=1e-7, err_msg=name)
        # The average is not the trained weights, parameters and statistics alike.
        self.assertGreater(np.abs(got["ema:param:final_layer.weight"] - raw["param:final_layer.weight"]).max(), 1e-4)
        self.assertGreater(np.abs(got["ema:buffer:bn1.running_var"] - raw["buffer:bn1.running_var"]).max(), 1e-4)

    def test_resume_mid_accumulation_is_bit_identical_with_the_average(self):
        batches = [tiny_batch(20 + i) for i in range(7)]
        init = tiny_init(training={"gradAccumSteps": 2, "clipGradNorm": 0.1, "optimizer": {"kind": "adam"}, "ema": EMA})
        with EngineProcess() as first:
            first.call("init", **init)
            for batch in batches[:3]:
                first.call("step", batch, lr=0.01)
            saved_fields, saved = first.call("get_state")
            continued = [without_id(first.call("step", batch, lr=0.01)[0]) for batch in batches[3:]]
            _, expected = first.call("get_state")
        self.assertIn("ema:param:final_layer.weight", saved)
        self.assertIn("ema:buffer:bn1.running_mean", saved)
        with EngineProcess() as second:
            second.call("init", **init)
            second.call("set_state", dict(saved), step=saved_fields["step"], microStep=saved_fields["microStep"])
            resumed = [without_id(second.call("step", batch, lr=0.01)[0]) for batch in batches[3:]]
            _, got = second.call("get_state")
        self.assertEqual(resumed, continued)
        self.assertEqual(set(got), set(expected))
        for name, value in expected.items():
            np.testing.assert_array_equal(got[name], value, err_msg=name)

    def test_a_state_without_the_average_starts_one_part_of_one_is_refused_and_bad_settings_are_listed(self):
        with EngineProcess() as engine:
            engine.call("init", **tiny_init())
            engine.call("step", tiny_batch(1), lr=0.05)
            _, plain = engine.call("get_state")
            answer, _ = engine.request("get_weights", averaged=True)
            self.assertEqual(answer["code"], "FAILED_PRECONDITION")

            ready, _ = engine.call("init", **tiny_init(training={"ema": EMA}))
            self.assertTrue(ready["ema"])
            engine.call("set_state", dict(plain), step=1, microStep=0)
            _, averaged = engine.call("get_weights", averaged=True)
            for name, value in plain.items():
                if name.startswith(("param:", "buffer:")):
                    np.testing.assert_array_equal(averaged[f"ema:{name}"], value, err_msg=name)
            _, state = engine.call("get_state")
            partial = {k: v for k, v in state.items() if k != "ema:param:conv1.weight"}
            answer, _ = engine.request("set_state", partial, step=1, microStep=0)
            self.assertEqual(answer["code"], "INVALID_ARGUMENT")
            self.assertIn("moving-average", answer["message"])

            answer, _ = engine.request("init", **tiny_init(training={"ema": {"decay": 1.0, "warmupUpdates": -2}}))
            self.assertEqual(answer["code"], "INVALID_ARGUMENT")
            self.assertIn("decay must lie in (0, 1)", answer["message"])
            self.assertIn("warmupUpdates must be a non-negative integer", answer["message"])


if __name__ == "__main__":
    unittest.main()
