"""The PyTorch zoo against libs/train's: names, shapes and order of parameters and buffers
(fixtures/zoo-shapes.json, written by fixtures/zoo_shapes.ts from the TypeScript zoo), and the fast
deconvolution path against nn.ConvTranspose2d."""
import json
import os
import unittest

import torch
from torch import nn

from poseloop_torch import zoo

torch.set_num_threads(1)
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


class ZooShapesTest(unittest.TestCase):
    def test_every_fixture_model_has_the_typescript_names_and_shapes(self):
        with open(os.path.join(FIXTURES, "zoo-shapes.json")) as f:
            expected = json.load(f)
        for name, entry in expected.items():
            with self.subTest(model=name):
                model = zoo.build_model(entry["config"])
                params = [[n, list(p.shape)] for n, p in model.named_parameters()]
                buffers = [[n, list(b.shape)] for n, b in model.named_buffers() if not n.endswith("num_batches_tracked")]
                self.assertEqual(params, entry["params"])
                self.assertEqual(buffers, entry["buffers"])

    def test_invalid_configs_name_their_problems(self):
        with self.assertRaisesRegex(ValueError, "ResNet depth must be one of"):
            zoo.build_model({"architecture": "simplebaseline", "inputWidth": 64, "inputHeight": 64, "numKeypoints": 17, "simpleBaseline": {"depth": 20}})
        with self.assertRaisesRegex(ValueError, "divisible by 8"):
            zoo.build_model({"architecture": "lite", "inputWidth": 50, "inputHeight": 64, "numKeypoints": 17})

    def test_heatmaps_come_out_at_the_configured_stride(self):
        for lite, stride in (({"channels": [4, 8, 8]}, 4), ({"channels": [4, 8, 8, 8], "heatmapStride": 2}, 2)):
            model = zoo.build_model({"architecture": "lite", "inputWidth": 32, "inputHeight": 48, "numKeypoints": 3, "lite": lite})
            self.assertEqual(list(model(torch.randn(1, 3, 48, 32)).shape), [1, 3, 48 // stride, 32 // stride])


class DetectorTest(unittest.TestCase):
    CONFIG = {"architecture": "detector-lite", "inputWidth": 32, "inputHeight": 48, "numKeypoints": 0, "detector": {"channels": [4, 8, 8, 8], "numClasses": 2}}

    def test_heads_come_out_at_a_quarter_of_the_input_and_start_as_centernet(self):
        centers, sizes, offsets = zoo.build_model(self.CONFIG)(torch.randn(2, 3, 48, 32))
        self.assertEqual([list(centers.shape), list(sizes.shape), list(offsets.shape)], [[2, 2, 12, 8], [2, 2, 12, 8], [2, 2, 12, 8]])
        # The −2.19 center bias: the untrained detector sees a probability near 0.1 everywhere.
        self.assertLess(abs(torch.sigmoid(centers).mean().item() - 0.1), 0.1)

    def test_invalid_detector_configs_name_their_problems(self):
        with self.assertRaisesRegex(ValueError, "divisible by 16"):
            zoo.build_model({**self.CONFIG, "inputWidth": 40})
        with self.assertRaisesRegex(ValueError, "detector classes must be a positive integer, got 0"):
            zoo.build_model({**self.CONFIG, "detector": {"numClasses": 0}})

    def test_the_loss_is_zero_only_for_a_perfect_prediction(self):
        target = torch.zeros(1, 1, 4, 4)
        target[0, 0, 1, 2] = 1
        mask = target.clone()
        sizes = torch.zeros(1, 2, 4, 4)
        sizes[0, :, 1, 2] = torch.tensor([3.0, 2.0])
        confident = torch.full((1, 1, 4, 4), -30.0)
        confident[0, 0, 1, 2] = 30.0
        perfect = zoo.detector_loss((confident, sizes, torch.zeros(1, 2, 4, 4)), target, sizes, torch.zeros(1, 2, 4, 4), mask)
        # The probability clamp keeps it a hair above 0.
        self.assertLess(perfect.item(), 1e-3)
        wrong = zoo.detector_loss((confident, sizes + 1, torch.zeros(1, 2, 4, 4)), target, sizes, torch.zeros(1, 2, 4, 4), mask)
        self.assertAlmostEqual(wrong.item() - perfect.item(), 0.1, places=3)


class SubpixelDeconvolutionTest(unittest.TestCase):
    def test_forward_and_gradients_equal_conv_transpose2d(self):
        torch.manual_seed(0)
        for kernel in (4, 3, 2):
            for bias in (False, True):
                with self.subTest(kernel=kernel, bias=bias):
                    padding, output_padding = zoo.deconv_padding(kernel)
                    fast = zoo.SubpixelConvTranspose2d(5, 3, kernel, 2, padding, output_padding, bias=bias).double()
                    self.assertIsNotNone(fast._taps)
                    plain = nn.ConvTranspose2d(5, 3, kernel, 2, padding, output_padding, bias=bias).double()
                    plain.load_state_dict(fast.state_dict())
                    x1 = torch.randn(2, 5, 6, 7, dtype=torch.float64, requires_grad=True)
                    x2 = x1.detach().clone().requires_grad_(True)
                    y1, y2 = fast(x1), plain(x2)
                    self.assertEqual(y1.shape, y2.shape)
                    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
                    seed = torch.randn_like(y1)
                    (y1 * seed).sum().backward()
                    (y2 * seed).sum().backward()
                    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-5)
                    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, rtol=1e-5, atol=1e-5)
                    if bias:
                        torch.testing.assert_close(fast.bias.grad, plain.bias.grad, rtol=1e-5, atol=1e-5)

    def test_float32_agrees_to_1e5(self):
        torch.manual_seed(1)
        fast = zoo.SubpixelConvTranspose2d(16, 8, 4, 2, 1, bias=False)
        x = torch.randn(2, 16, 8, 6)
        reference = nn.functional.conv_transpose2d(x, fast.weight, None, 2, 1)
        torch.testing.assert_close(fast(x), reference, rtol=1e-5, atol=1e-5)

    def test_the_flag_selects_plain_conv_transpose(self):
        model = zoo.build_model({"architecture": "lite", "inputWidth": 32, "inputHeight": 32, "numKeypoints": 3, "lite": {"channels": [4, 8, 8]}})
        zoo.set_subpixel(model, False)
        self.assertFalse(model.up[0].subpixel)


if __name__ == "__main__":
    unittest.main()
