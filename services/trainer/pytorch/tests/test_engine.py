"""The engine through its real protocol, as a child process: hello, the step against libs/train's golden
fixture (the parity of the two engines), replicas, state round trips, mixed precision, the error answers and
the process's life cycle."""
import os
import signal
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch

from client import PACKAGE_ROOT, EngineProcess, read_golden
from poseloop_torch import zoo
from poseloop_torch.engine import gradient_norm

torch.set_num_threads(1)
GOLDENS = os.path.join(PACKAGE_ROOT, "..", "..", "..", "libs", "train", "fixtures")
TINY = {"architecture": "lite", "inputWidth": 32, "inputHeight": 32, "numKeypoints": 3, "lite": {"channels": [4, 8, 8]}}


def tiny_init(**overrides):
    training = {"batchSize": 2, "gradAccumSteps": 1, "clipGradNorm": 0, "optimizer": {"kind": "sgd", "momentum": 0.9}}
    training.update(overrides.pop("training", {}))
    return {"model": TINY, "training": training, "device": "cpu", "amp": False, "replicas": 1, "threads": 1, **overrides}


def tiny_batch(seed, batch=2):
    rng = np.random.default_rng(seed)
    return {
        "images": rng.standard_normal((batch, 3, 32, 32)).astype(np.float32),
        "targets": rng.random((batch, 3, 8, 8)).astype(np.float32),
        "target_weights": (rng.random((batch, 3)) > 0.2).astype(np.float32),
    }


def relative_error(actual, expected):
    scale = float(np.abs(expected).max())
    diff = float(np.abs(actual.astype(np.float64) - expected).max())
    return diff if scale == 0 else diff / scale


class HelloTest(unittest.TestCase):
    def test_probe_writes_the_hello_line_and_exits_0(self):
        with EngineProcess(["--probe"]) as engine:
            hello = engine.hello
            self.assertEqual(engine.proc.wait(30), 0)
        self.assertEqual(hello["type"], "hello")
        self.assertEqual(hello["protocol"], 1)
        self.assertEqual(hello["torch"], torch.__version__)
        self.assertEqual(hello["cuda"]["available"], torch.cuda.is_available())
        self.assertIsInstance(hello["bf16"], bool)
        self.assertEqual(set(hello["distributed"]), {"gloo", "nccl"})

    def test_a_torch_that_cannot_be_imported_is_an_error_hello_and_exit_3(self):
        with tempfile.TemporaryDirectory() as fake:
            os.makedirs(os.path.join(fake, "torch"))
            with open(os.path.join(fake, "torch", "__init__.py"), "w") as f:
                f.write("raise ImportError('libtorch_cpu.so: cannot open shared object file')\n")
            env = {**os.environ, "PYTHONPATH": f"{fake}{os.pathsep}{PACKAGE_ROOT}"}
            done = subprocess.run([sys.executable, "-m", "poseloop_torch"], cwd=PACKAGE_ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        self.assertEqual(done.returncode, 3)
        lines = done.stdout.decode().splitlines()
        self.assertEqual(len(lines), 1)
        self.assertIn('"error":"cannot import torch: ImportError: libtorch_cpu.so', lines[0])


class GoldenParityTest(unittest.TestCase):
    """libs/train's golden fixtures: PyTorch (float64) through two updates of two accumulated micro-batches with
    clipping, for SGD (momentum, Nesterov, weight decay), Adam (L2) and AdamW. Matching it within the bound the
    TypeScript engine's own test uses proves the two engines compute the same training."""

    def test_goldens_for_every_optimizer(self):
        with EngineProcess() as engine:
            for fixture in ("golden-lite.bin", "golden-lite-half.bin", "golden-simplebaseline-r18.bin", "golden-hrnet-w4.bin", "golden-detector-lite.bin"):
                with self.subTest(fixture=fixture):
                    self.check_golden(engine, fixture)

    def check_golden(self, engine, fixture):
        tensors, meta = read_golden(os.path.join(GOLDENS, fixture))
        model = meta["model"]
        param_names = set(meta["paramNames"])
        init = {k[len("init/") :]: v for k, v in tensors.items() if k.startswith("init/")}
        state = {(f"param:{k}" if k in param_names else f"buffer:{k}"): v for k, v in init.items()}
        for name, spec in meta["optimizers"].items():
            with self.subTest(optimizer=name):
                training = {"batchSize": meta["batchSize"], "gradAccumSteps": meta["gradAccumSteps"], "clipGradNorm": spec["clipGradNorm"], "optimizer": spec["config"]}
                engine.call("init", model=model, training=training, device="cpu", amp=False, replicas=1, threads=1)
                engine.call("set_state", state, step=0, microStep=0)
                losses, norms = [], []
                for i in range(meta["updates"] * meta["gradAccumSteps"]):
                    # Every input by its graph name: images and heatmap targets, or the detector's loss inputs.
                    batch = {k[len("input/") :]: v[i] for k, v in tensors.items() if k.startswith("input/")}
                    result, _ = engine.call("step", batch, lr=spec["lr"])
                    losses.append(result["loss"])
                    if result["updated"]:
                        norms.append(result["gradNorm"])
                    self.assertEqual(result["updated"], i % 2 == 1)
                _, weights = engine.call("get_weights")
                bound = lambda key: max(1e-4, 4 * meta["float32Error"][key])  # noqa: E731 - the TypeScript test's bound
                self.assertLess(relative_error(np.array(losses), tensors[f"{name}/losses"]), bound(f"{name}/losses"))
                self.assertLess(relative_error(np.array(norms), tensors[f"{name}/grad_norms"]), bound(f"{name}/grad_norms"))
                for key in init:
                    full = f"{name}/final/{key}"
                    got = weights[f"param:{key}" if key in param_names else f"buffer:{key}"]
                    self.assertLess(relative_error(got, tensors[full]), bound(full), key)


class ReplicasTest(unittest.TestCase):
    def test_two_replicas_in_one_process_equal_torch_by_hand(self):
        """Each replica's block runs on its own (BatchNorm per replica, running statistics from replica 0) and
        the update applies the mean of their gradients, clipped."""
        batches = [tiny_batch(10 + i, batch=4) for i in range(2)]
        with EngineProcess() as engine:
            engine.call("init", **tiny_init(replicas=2, training={"clipGradNorm": 0.05}))
            _, start = engine.call("get_weights")
            results = [engine.call("step", batch, lr=0.1)[0] for batch in batches]
            _, final = engine.call("get_weights")
        model = zoo.build_model(TINY)
        zoo.set_subpixel(model, False)
        model.load_state_dict({k.split(":", 1)[1]: torch.from_numpy(v.copy()) for k, v in start.items()}, strict=False)
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        buffers = [b for n, b in model.named_buffers() if not n.endswith("num_batches_tracked")]
        for batch, result in zip(batches, results):
            optimizer.zero_grad()
            grads, losses, replica0 = [], [], None
            for r in range(2):
                block = {k: torch.from_numpy(v[2 * r : 2 * r + 2].copy()) for k, v in batch.items()}
                model.zero_grad()
                loss = zoo.joints_mse(model(block["images"]), block["targets"], block["target_weights"])
                loss.backward()
                losses.append(loss.item())
                grads.append([p.grad.clone() for p in model.parameters()])
                if r == 0:
                    replica0 = [b.clone() for b in buffers]
            with torch.no_grad():
                for b, saved in zip(buffers, replica0):
                    b.copy_(saved)
            for p, g0, g1 in zip(model.parameters(), *grads):
                p.grad = (g0 + g1) / 2
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)
            optimizer.step()
            self.assertAlmostEqual(result["loss"], sum(losses) / 2, delta=1e-6 * abs(result["loss"]))
            self.assertAlmostEqual(result["gradNorm"], norm.item(), delta=1e-5 * norm.item())
        expected = {f"param:{n}": p.detach().numpy() for n, p in model.named_parameters()}
        expected.update({f"buffer:{n}": b.numpy() for n, b in model.named_buffers() if not n.endswith("num_batches_tracked")})
        for name, value in expected.items():
            np.testing.assert_allclose(final[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def without_id(message):
    return {k: v for k, v in message.items() if k != "id"}


class StateTest(unittest.TestCase):
    OPTIMIZERS = {
        "adam": {"kind": "adam", "weightDecay": 1e-4},
        "sgd": {"kind": "sgd", "momentum": 0.9, "nesterov": True, "weightDecay": 1e-4},
        "adamw": {"kind": "adamw"},
    }

    def test_state_round_trip_mid_accumulation_is_bit_identical(self):
        """get_state → set_state in a fresh process → continuing gives exactly what never stopping gives."""
        batches = [tiny_batch(i) for i in range(7)]
        inits = {name: tiny_init(training={"gradAccumSteps": 2, "clipGradNorm": 0.1, "optimizer": o}) for name, o in self.OPTIMIZERS.items()}
        runs = {}
        with EngineProcess() as first:
            for name, init in inits.items():
                first.call("init", **init)
                for batch in batches[:3]:
                    first.call("step", batch, lr=0.01)
                saved_fields, saved = first.call("get_state")
                continued = [without_id(first.call("step", batch, lr=0.01)[0]) for batch in batches[3:]]
                runs[name] = (saved_fields, saved, continued, first.call("get_state")[1])
        with EngineProcess() as second:
            for name, init in inits.items():
                with self.subTest(optimizer=name):
                    saved_fields, saved, continued, expected = runs[name]
                    self.assertEqual((saved_fields["step"], saved_fields["microStep"]), (1, 1))
                    second.call("init", **init)
                    second.call("set_state", dict(saved), step=saved_fields["step"], microStep=saved_fields["microStep"])
                    echoed_fields, echoed = second.call("get_state")
                    self.assertEqual(without_id(echoed_fields), without_id(saved_fields))
                    resumed = [without_id(second.call("step", batch, lr=0.01)[0]) for batch in batches[3:]]
                    _, got = second.call("get_state")
                    self.assertEqual(set(echoed), set(saved))
                    for state, reference in ((echoed, saved), (got, expected)):
                        for tensor in reference:
                            np.testing.assert_array_equal(state[tensor], reference[tensor], err_msg=tensor)
                    self.assertEqual(resumed, continued)
        adam, sgd = runs["adam"][1], runs["sgd"][1]
        self.assertIn("slot:exp_avg_sq:conv1.weight", adam)
        self.assertIn("accum:final_layer.bias", adam)
        self.assertIn("slot:momentum_buffer:conv1.weight", sgd)
        self.assertNotIn("buffer:bn1.num_batches_tracked", sgd)


class OneEngineTest(unittest.TestCase):
    """Answers that need no process of their own share one engine."""

    @classmethod
    def setUpClass(cls):
        cls.engine = EngineProcess()

    @classmethod
    def tearDownClass(cls):
        # End of stdin ends the engine, with exit code 0.
        assert cls.engine.close(30) == 0

    def test_set_state_refuses_unknown_and_misshapen_tensors(self):
        engine = self.engine
        engine.call("init", **tiny_init())
        answer, _ = engine.request("set_state", {"param:nope": np.zeros(3, np.float32)}, step=0, microStep=0)
        self.assertEqual((answer["type"], answer["code"]), ("error", "INVALID_ARGUMENT"))
        _, weights = engine.call("get_weights")
        weights = dict(weights)
        weights["param:conv1.weight"] = np.zeros((1, 2), np.float32)
        answer, _ = engine.request("set_state", weights, step=0, microStep=0)
        self.assertEqual(answer["code"], "INVALID_ARGUMENT")
        self.assertIn("conv1.weight", answer["message"])

    def test_amp_on_cpu_is_a_bf16_autocast_step_without_loss_scaling(self):
        ready, _ = self.engine.call("init", **tiny_init(amp=True))
        self.assertEqual(ready["amp"], "bf16")
        result, _ = self.engine.call("step", tiny_batch(0), lr=0.01)
        self.assertTrue(result["updated"])
        self.assertTrue(np.isfinite(result["loss"]) and np.isfinite(result["gradNorm"]))
        self.assertNotIn("lossScale", result)
        self.assertNotIn("skipped", result)

    def test_an_impossible_device_is_a_failed_precondition_naming_it(self):
        for device in ("cuda", "cuda:7"):
            if torch.cuda.is_available() and device == "cuda":
                continue
            answer, _ = self.engine.request("init", **tiny_init(device=device))
            self.assertEqual(answer["code"], "FAILED_PRECONDITION")
            self.assertIn(device, answer["message"])
            self.assertTrue("is_available() is false" in answer["message"] or "device_count()" in answer["message"], answer["message"])
        self.assertEqual(self.engine.request("init", **tiny_init(device="tpu"))[0]["code"], "INVALID_ARGUMENT")

    def test_invalid_requests_get_error_answers(self):
        engine = self.engine
        engine.send({"type": "get_state"})
        self.assertIn("integer id", engine.read()[0]["message"])
        self.assertEqual(engine.request("frobnicate")[0]["code"], "INVALID_ARGUMENT")
        self.assertEqual(engine.request("init", model={"architecture": "lite"}, training={"batchSize": 2, "optimizer": {"kind": "sgd"}})[0]["code"], "INVALID_ARGUMENT")
        engine.call("init", **tiny_init())
        answer, _ = engine.request("step", tiny_batch(0, batch=3), lr=0.1)
        self.assertEqual(answer["code"], "INVALID_ARGUMENT")
        self.assertIn("images has shape [3, 3, 32, 32]", answer["message"])
        self.assertEqual(engine.call("step", tiny_batch(0), lr=0.1)[0]["type"], "step_result")

    def test_distillation_needs_teacher_heatmaps(self):
        engine = self.engine
        for kind in ("mse", "kl"):
            engine.call("init", **tiny_init(training={"distillation": {"weight": 0.5, "kind": kind, "temperature": 2}}))
            batch = tiny_batch(0)
            batch["teacher"] = np.random.default_rng(0).random((2, 3, 8, 8)).astype(np.float32)
            self.assertEqual(engine.call("step", batch, lr=0.1)[0]["type"], "step_result")
            del batch["teacher"]
            answer, _ = engine.request("step", batch, lr=0.1)
            self.assertEqual(answer["code"], "INVALID_ARGUMENT")
            self.assertIn("teacher", answer["message"])


class GradientNormTest(unittest.TestCase):
    def test_the_multi_tensor_norm_cuda_takes_equals_the_per_tensor_one(self):
        generator = torch.Generator().manual_seed(3)
        grads = [torch.randn(shape, generator=generator) for shape in ([32, 16, 3, 3], [32], [17, 32, 1, 1], [1])]
        loop = gradient_norm(grads, foreach=False)
        expected = torch.norm(torch.stack([g.double().norm() for g in grads])).item()
        self.assertAlmostEqual(loop.item() / expected, 1, delta=1e-6)
        self.assertAlmostEqual(gradient_norm(grads, foreach=True).item() / loop.item(), 1, delta=1e-6)


class ErrorTest(unittest.TestCase):
    def test_garbage_gets_error_answers_and_an_unsizable_payload_ends_the_engine(self):
        with EngineProcess() as engine:
            self.assertEqual(engine.request("step", tiny_batch(0), lr=0.1)[0]["code"], "FAILED_PRECONDITION")
            engine.proc.stdin.write(b"hello there\n")
            engine.proc.stdin.flush()
            answer, _ = engine.read()
            self.assertEqual((answer["type"], answer["id"], answer["code"]), ("error", None, "INVALID_ARGUMENT"))
            # Still serving after a bad line.
            self.assertEqual(engine.request("get_weights")[0]["code"], "FAILED_PRECONDITION")
            # A payload entry it cannot size desynchronizes the stream: an error answer, then exit 2.
            engine.proc.stdin.write(b'{"type":"step","id":99,"payload":[["images","f64",[1]]]}\n')
            engine.proc.stdin.flush()
            answer, _ = engine.read()
            self.assertEqual(answer["code"], "INVALID_ARGUMENT")
            self.assertEqual(engine.proc.wait(30), 2)

    def test_out_of_memory_answers_with_advice_and_keeps_the_state_before_the_step(self):
        # POSELOOP_TORCH_INJECT makes the second step fail as CUDA would, after its backward pass; the fourth
        # fails with an unexpected exception.
        init = tiny_init(training={"gradAccumSteps": 2, "optimizer": {"kind": "adam"}})
        with EngineProcess(env={"POSELOOP_TORCH_INJECT": "oom:2"}) as engine:
            engine.call("init", **init)
            engine.call("step", tiny_batch(0), lr=0.01)
            before_fields, before = engine.call("get_state")
            answer, _ = engine.request("step", tiny_batch(1), lr=0.01)
            self.assertEqual(answer["code"], "OUT_OF_MEMORY")
            for advice in ("TRAIN.BATCH_SIZE_PER_GPU", "TRAIN.GRAD_ACCUM_STEPS", "TRAIN.AMP"):
                self.assertIn(advice, answer["message"])
            after_fields, after = engine.call("get_state")
        self.assertEqual(without_id(after_fields), without_id(before_fields))
        for name in before:
            np.testing.assert_array_equal(after[name], before[name], err_msg=name)

    def test_an_unexpected_failure_is_internal_with_a_one_line_message(self):
        with EngineProcess(env={"POSELOOP_TORCH_INJECT": "error:1"}) as engine:
            engine.call("init", **tiny_init())
            answer, _ = engine.request("step", tiny_batch(0), lr=0.01)
            self.assertEqual(answer["code"], "INTERNAL")
            self.assertEqual(answer["message"], "ValueError: injected by POSELOOP_TORCH_INJECT")
            self.assertEqual(engine.call("get_weights")[0]["type"], "weights")
            self.assertIn("Traceback", engine.stderr_text())


class LifeCycleTest(unittest.TestCase):
    def test_sigterm_lets_the_engine_answer_then_shutdown_says_bye(self):
        with EngineProcess() as engine:
            engine.call("init", **tiny_init())
            engine.proc.send_signal(signal.SIGTERM)
            engine.proc.send_signal(signal.SIGINT)
            self.assertEqual(engine.call("step", tiny_batch(0), lr=0.1)[0]["type"], "step_result")
            self.assertEqual(engine.call("get_state")[0]["type"], "state")
            self.assertEqual(engine.call("shutdown")[0]["type"], "bye")
            self.assertEqual(engine.proc.wait(30), 0)



if __name__ == "__main__":
    unittest.main()
