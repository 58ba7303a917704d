"""Data parallelism under torchrun: two gloo ranks on CPU (rank 0 driven over the protocol) give the training
of one process running replicas=2 over the same global batches, accumulation (DDP's no_sync) included."""
import unittest

import numpy as np

from client import EngineProcess
from test_engine import tiny_batch, tiny_init

# DDP averages the ranks' gradients (an all-reduce sum, then / 2); one process sums g/2 + g/2: float32
# rounding apart, the same numbers. Per tensor, relative to its largest magnitude. With SGD the two agree to
# about 1e-7, the accumulated gradients of the odd tensor (a BatchNorm scale whose gradient nearly cancels) to
# 1e-6 (seen in CI: 1.0e-6); Adam divides by √v and turns the rounding of near-zero gradients into visible
# steps (5e-6). 1e-5 bounds rounding; a wrong average (a sum, a missing rank) is off by 0.5 or more.
RTOL = 1e-5


def relative_error(actual, expected):
    scale = float(np.abs(expected).max())
    diff = float(np.abs(actual.astype(np.float64) - expected).max())
    return diff if scale == 0 else diff / scale


class DistributedTest(unittest.TestCase):
    def test_two_ranks_equal_one_process_with_two_replicas(self):
        init = tiny_init(replicas=2, training={"gradAccumSteps": 2, "clipGradNorm": 0.05, "optimizer": {"kind": "sgd", "momentum": 0.9, "nesterov": True, "weightDecay": 1e-4}})
        batches = [tiny_batch(20 + i, batch=4) for i in range(4)]
        with EngineProcess() as single:
            single.call("init", **init)
            _, start = single.call("get_weights")
            ready1, results1, fields1, state1, weights1 = _run_with_start(single, init, batches, start)
        with EngineProcess(nproc=2) as ranks:
            ready2, results2, fields2, state2, weights2 = _run_with_start(ranks, init, batches, start)
            self.assertEqual(ranks.call("shutdown")[0]["type"], "bye")
            self.assertEqual(ranks.proc.wait(60), 0)
        self.assertEqual((ready1["worldSize"], ready2["worldSize"]), (1, 2))
        self.assertEqual(ready1["params"], ready2["params"])
        for a, b in zip(results1, results2):
            self.assertEqual((a["updated"], a["step"]), (b["updated"], b["step"]))
            self.assertAlmostEqual(a["loss"], b["loss"], delta=RTOL * abs(a["loss"]))
            if a["updated"]:
                self.assertAlmostEqual(a["gradNorm"], b["gradNorm"], delta=RTOL * a["gradNorm"])
        self.assertEqual((fields1["step"], fields1["microStep"]), (fields2["step"], fields2["microStep"]))
        self.assertEqual(set(state1), set(state2))
        for name in state1:
            self.assertLess(relative_error(state2[name], state1[name]), RTOL, name)
        for name in weights1:
            self.assertLess(relative_error(weights2[name], weights1[name]), RTOL, name)


def _run_with_start(engine, init, batches, start):
    ready, _ = engine.call("init", **init)
    engine.call("set_state", dict(start), step=0, microStep=0)
    results = [engine.call("step", batch, lr=0.05)[0] for batch in batches[:3]]
    fields, state = engine.call("get_state")
    results += [engine.call("step", batch, lr=0.05)[0] for batch in batches[3:]]
    _, weights = engine.call("get_weights")
    return ready, results, fields, state, weights


if __name__ == "__main__":
    unittest.main()
