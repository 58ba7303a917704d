"""poseloop_torch.data's codecs, warp and image store against the TypeScript they port
(fixtures/data-reference-b.json, tiny.jpg, tiny.png and tiny-grey16.png, written by fixtures/data_reference_b.ts).

Codec targets, warps and normalization must be the very floats the TypeScript loader writes; lossless images
the very pixels sharp decodes; the JPEG within a level (identical with Debian's PIL 9.4 against sharp 0.35, but
both are libjpeg-turbo builds that may round an IDCT differently in other versions)."""
import base64
import json
import os
import shutil
import tempfile
import unittest

import numpy as np

from poseloop_torch.data.codecs import create_codec
from poseloop_torch.data.images import DataError, ImageStore, image_label
from poseloop_torch.data.warp import normalize_in_place, warp_to_tensor

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
# PIL's libjpeg-turbo against sharp's: the same decoder family, other builds.
JPEG_TOLERANCE = 1

with open(os.path.join(FIXTURES, "data-reference-b.json")) as _f:
    REFERENCE = json.load(_f)


def f32(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.float32).copy()


def u8(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.uint8).copy()


class CodecTest(unittest.TestCase):
    def test_encodes_are_the_typescript_floats(self):
        sets = REFERENCE["codecs"]["keypointSets"]
        for name, entry in REFERENCE["codecs"]["specs"].items():
            with self.subTest(codec=name):
                codec = create_codec(entry["spec"])
                self.assertEqual(codec.udp, entry["udp"])
                self.assertEqual(codec.target_shape, entry["targetShape"])
                expected_targets = f32(entry["targets"])
                expected_weights = f32(entry["weights"])
                targets = np.full(expected_targets.shape, 7, dtype=np.float32)
                weights = np.full(expected_weights.shape, 7, dtype=np.float32)
                for index, sample in enumerate(sets):
                    keypoints = np.array(sample["keypoints"], dtype=np.float32).reshape(-1, 2)
                    codec.encode(keypoints, np.array(sample["visibility"], dtype=np.float32), [targets], weights, index)
                np.testing.assert_array_equal(weights, expected_weights)
                np.testing.assert_array_equal(targets, expected_targets)

    def test_the_fixture_covers_untrained_and_clipped_joints(self):
        weights = f32(REFERENCE["codecs"]["specs"]["msra"]["weights"])
        self.assertGreater(int((weights == 0).sum()), 5)
        self.assertIn(np.float32(0.7), weights)

    def test_encode_writes_into_a_batch_tensor_view(self):
        spec = REFERENCE["codecs"]["specs"]["udp"]["spec"]
        codec = create_codec(spec)
        batch = np.zeros((3, *codec.target_shape[0]), dtype=np.float32)
        weights = np.zeros((3, codec.num_keypoints), dtype=np.float32)
        codec.encode(np.full(2 * codec.num_keypoints, 20, dtype=np.float32), None, [batch], weights, 2)
        self.assertTrue((weights[2] == 1).all())
        self.assertGreater(float(batch[2].max()), 0.9)
        self.assertEqual(float(abs(batch[:2]).sum()), 0.0)

    def test_simcc_and_bad_specs_are_refused(self):
        with self.assertRaisesRegex(ValueError, "simcc"):
            create_codec({"kind": "simcc", "inputSize": {"width": 48, "height": 64}, "numKeypoints": 17})
        base = dict(REFERENCE["codecs"]["specs"]["msra"]["spec"])
        with self.assertRaisesRegex(ValueError, "sigma"):
            create_codec({**base, "sigma": 0})
        with self.assertRaisesRegex(ValueError, "heatmapSize"):
            create_codec({**base, "heatmapSize": {"width": 0, "height": 16}})
        codec = create_codec(base)
        with self.assertRaisesRegex(ValueError, r"keypoints\[3\] must be a finite number"):
            codec.encode([0, 0, 0, np.nan] + [0] * 6, None, [np.zeros(5 * 16 * 12, np.float32)], np.zeros(5, np.float32))
        with self.assertRaisesRegex(ValueError, "instance 1"):
            codec.encode([0] * 10, None, [np.zeros(5 * 16 * 12, np.float32)], np.zeros(10, np.float32), 1)


class WarpTest(unittest.TestCase):
    def test_warps_are_the_typescript_floats(self):
        warps = REFERENCE["warps"]
        info = warps["image"]
        image = u8(info["rgb"]).reshape(info["height"], info["width"], 3)
        for case in warps["cases"]:
            with self.subTest(affine=case["affine"], normalization=case["normalization"]):
                expected = f32(case["out"])
                out = np.full(expected.shape, -7, dtype=np.float32)
                warp_to_tensor(image, case["inverseAffine"], warps["outWidth"], warps["outHeight"],
                               warps["normalizations"][case["normalization"]], out, warps["offset"])
                np.testing.assert_array_equal(out, expected)

    def test_normalize_in_place_is_the_typescript_floats(self):
        entry = REFERENCE["normalize"]
        normalizations = REFERENCE["warps"]["normalizations"]
        for name, expected in entry["normalized"].items():
            with self.subTest(normalization=name):
                planes = f32(entry["planes"])
                normalize_in_place(planes, entry["offset"], entry["planeSize"], normalizations[name])
                np.testing.assert_array_equal(planes, f32(expected))

    def test_a_slot_that_does_not_fit_is_refused(self):
        image = np.zeros((4, 4, 3), dtype=np.uint8)
        with self.assertRaisesRegex(ValueError, "does not fit"):
            warp_to_tensor(image, (1, 0, 0, 0, 1, 0), 4, 4, REFERENCE["warps"]["normalizations"]["imagenet"],
                           np.zeros(47, dtype=np.float32), 0)


class ImageStoreTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()

    def tearDown(self):
        shutil.rmtree(self.dir)

    def test_lossless_images_decode_to_the_typescript_pixels(self):
        store = ImageStore(1 << 20, 5.0)
        for name in ("tiny.png", "tiny-grey16.png"):
            with self.subTest(image=name):
                expected = REFERENCE["images"][name]
                pixels = store.get(os.path.join(FIXTURES, name), name)
                self.assertEqual(pixels.shape, (expected["height"], expected["width"], 3))
                np.testing.assert_array_equal(pixels.reshape(-1), u8(expected["rgb"]))

    def test_jpeg_is_oriented_and_close_to_the_typescript_pixels(self):
        expected = REFERENCE["images"]["tiny.jpg"]
        pixels = ImageStore(1 << 20, 5.0).get(os.path.join(FIXTURES, "tiny.jpg"), "tiny")
        self.assertEqual(pixels.shape, (expected["height"], expected["width"], 3))
        difference = np.abs(pixels.reshape(-1).astype(np.int16) - u8(expected["rgb"]).astype(np.int16))
        self.assertLessEqual(int(difference.max()), JPEG_TOLERANCE)

    def test_a_missing_file_is_not_found_naming_the_image(self):
        path = os.path.join(self.dir, "train", "000042.jpg")
        label = image_label(42, path)
        self.assertEqual(label, "image 42 (train/000042.jpg)")
        with self.assertRaises(DataError) as caught:
            ImageStore(1 << 20, 5.0).get(path, label)
        self.assertEqual(caught.exception.code, "NOT_FOUND")
        self.assertEqual(caught.exception.message, "image 42 (train/000042.jpg) not found")
        self.assertNotIn(self.dir, caught.exception.message)

    def test_a_truncated_jpeg_is_invalid_argument(self):
        with open(os.path.join(FIXTURES, "tiny.jpg"), "rb") as f:
            data = f.read()
        path = os.path.join(self.dir, "cut.jpg")
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
        with self.assertRaises(DataError) as caught:
            ImageStore(1 << 20, 5.0).get(path, image_label(7, path))
        self.assertEqual(caught.exception.code, "INVALID_ARGUMENT")
        self.assertRegex(caught.exception.message, r"^image 7 \(.*/cut\.jpg\): the jpeg image \(\d+ bytes\) is truncated")

    def test_bytes_that_are_no_image_are_invalid_argument(self):
        path = os.path.join(self.dir, "notes.jpg")
        with open(path, "wb") as f:
            f.write(b"hello")
        with self.assertRaises(DataError) as caught:
            ImageStore(1 << 20, 5.0).get(path, "image 3 (x/notes.jpg)")
        self.assertEqual(caught.exception.code, "INVALID_ARGUMENT")
        self.assertIn("image 3 (x/notes.jpg)", caught.exception.message)

    def test_the_cache_evicts_the_least_recently_used_by_bytes(self):
        paths = []
        for i in range(3):
            path = os.path.join(self.dir, f"{i}.png")
            shutil.copy(os.path.join(FIXTURES, "tiny.png"), path)
            paths.append(path)
        one = 21 * 14 * 3
        store = ImageStore(2 * one + 10, 5.0)
        store.get(paths[0], "0")
        store.get(paths[1], "1")
        store.get(paths[0], "0")  # 0 is now the most recently used
        store.get(paths[2], "2")  # evicts 1
        self.assertEqual(store.memory_used, 2 * one)
        self.assertEqual(store.stats["decoded"], 3)
        store.get(paths[0], "0")
        store.get(paths[2], "2")
        self.assertEqual(store.stats["decoded"], 3)
        store.get(paths[1], "1")
        self.assertEqual(store.stats["decoded"], 4)
        self.assertLessEqual(store.memory_used, 2 * one + 10)

    def test_an_image_larger_than_the_cache_is_served_but_not_kept(self):
        store = ImageStore(100, 5.0)
        path = os.path.join(FIXTURES, "tiny.png")
        store.get(path, "a")
        store.get(path, "a")
        self.assertEqual(store.stats["decoded"], 2)
        self.assertEqual(store.memory_used, 0)


if __name__ == "__main__":
    unittest.main()
