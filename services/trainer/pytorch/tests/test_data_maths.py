"""poseloop_torch.data's random draws, epoch orders, crop geometry and augmentation against the TypeScript's
(fixtures/data-reference-a.json, written by fixtures/data_reference_a.ts from libs/core, libs/pose and libs/data).

Draws, orders, regions without rotation and pixels must be identical: the Python loader then builds the
TypeScript's batches. Box–Muller normals (and through them the augmentation's scale and rotation) and the
cos/sin of a rotated crop may differ in the last bits, because V8 computes log/cos/sin with fdlibm and Python
with the C library (each within one unit in the last place, but not always the same one); those are compared
to 2e-15 of their magnitude (or of 1, near zero, where the mean cancels the draw).
"""
import base64
import json
import os
import unittest
from typing import Any

import numpy as np

from poseloop_torch.data.augment import OcclusionPatch, SampleAugmentation, augment_region, half_body_region, jitter_colours, paste_occlusion, sample_augmentation
from poseloop_torch.data.geometry import CropRegion, apply_affine, box_to_crop_region, compose_affine, crop_affine, flip_permutation, invert_affine, upper_body_joints
from poseloop_torch.data.seeded_random import AUGMENT_STREAM, ORDER_STREAM, SeededRandom, batch_count, epoch_order

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
with open(os.path.join(FIXTURES, "data-reference-a.json")) as _f:
    REF: dict[str, Any] = json.load(_f)

# What libm and fdlibm may disagree by: log, cos or sin one unit in the last place apart, carried through a
# product or two (a few units of 2^-52).
NORMAL_RTOL = 2e-15


def make_generator(spec: dict[str, Any]) -> SeededRandom:
    kind = spec["kind"]
    if kind == "new":
        return SeededRandom(*spec["args"])
    if kind == "seed32":
        return SeededRandom.from_seed32(spec["seed"])
    if kind == "state":
        return SeededRandom.from_state(spec["state"])
    return SeededRandom(*spec["args"]).derive(spec["stream"])


def floats(encoded: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(encoded), dtype="<f4").copy()


def test_image(width: int, height: int, slots: int) -> np.ndarray:
    """The fixture script's input planes: both clamps in reach, some values not whole."""
    i = np.arange(slots * 3 * width * height)
    values = np.where(i % 29 == 0, 255.0, np.where(i % 31 == 0, 0.0, ((i * 37) % 256) + (i % 3) * 0.3))
    return values.astype(np.float32)


def region_of(plain: dict[str, Any]) -> CropRegion:
    return CropRegion(center=tuple(plain["center"]), scale=tuple(plain["scale"]), rotation=plain["rotation"])


def augmentation_of(plain: dict[str, Any]) -> SampleAugmentation:
    occ = plain["occlusion"]
    occlusion = None
    if occ is not None:
        colour = tuple(occ["colour"]) if occ["colour"] is not None else None
        occlusion = OcclusionPatch(x=occ["x"], y=occ["y"], width=occ["width"], height=occ["height"], colour=colour, noise_seed=occ["noiseSeed"])
    return SampleAugmentation(
        half_body=plain["halfBody"], prefer_upper=plain["preferUpper"], scale=plain["scale"], rotation=plain["rotation"], flip=plain["flip"],
        occlusion=occlusion, brightness=plain["brightness"], contrast=plain["contrast"], saturation=plain["saturation"],
    )


class CloseMixin(unittest.TestCase):
    def assertNearly(self, actual: float, expected: float, what: str = "") -> None:
        self.assertLessEqual(abs(actual - expected), NORMAL_RTOL * max(1.0, abs(expected)), f"{what}: {actual!r} vs {expected!r}")

    def assertRelative(self, actual: Any, expected: Any, rtol: float = 1e-9) -> None:
        a = np.asarray(actual, dtype=np.float64)
        e = np.asarray(expected, dtype=np.float64)
        self.assertEqual(a.shape, e.shape)
        # Relative to the largest magnitude of the set, so terms that cancel to ~0 are not judged alone.
        scale = max(1.0, float(np.max(np.abs(e)))) if e.size else 1.0
        self.assertLessEqual(float(np.max(np.abs(a - e))) if e.size else 0.0, rtol * scale, f"{actual} vs {expected}")

    def assertRegion(self, actual: CropRegion | None, expected: dict[str, Any] | None, exact: bool) -> None:
        if expected is None:
            self.assertIsNone(actual)
            return
        assert actual is not None
        got = [*actual.center, *actual.scale, actual.rotation]
        want = [*expected["center"], *expected["scale"], expected["rotation"]]
        if exact:
            self.assertEqual(got, want)
        else:
            self.assertRelative(got, want)


class SeededRandomTest(CloseMixin):
    def test_the_stream_constants_are_the_typescript_ones(self):
        self.assertEqual((ORDER_STREAM, AUGMENT_STREAM), (REF["streams"]["ORDER_STREAM"], REF["streams"]["AUGMENT_STREAM"]))

    def test_every_seeding_gives_the_typescript_state(self):
        for entry in REF["generators"]:
            with self.subTest(make=entry["make"]):
                self.assertEqual(list(make_generator(entry["make"]).state), entry["initialState"])
                random = make_generator(entry["make"])
                for _ in range(20):
                    random.next_uint32()
                self.assertEqual(list(random.state), entry["stateAfter"])

    def test_uniform_draws_are_bit_for_bit_the_typescript_ones(self):
        for entry in REF["generators"]:
            with self.subTest(make=entry["make"]):
                fresh = lambda: make_generator(entry["make"])  # noqa: E731
                for name, draw in (
                    ("nextUint32", lambda r: r.next_uint32()),
                    ("next", lambda r: r.next()),
                    ("uniform", lambda r: r.uniform(-2.5, 3)),
                    ("int", lambda r: r.int(-5, 17)),
                    ("chance", lambda r: r.chance(0.3)),
                    ("weightedIndex", lambda r: r.weighted_index([0.5, 0, 2, -1, 1.25])),
                    ("pick", lambda r: r.pick(["a", "b", "c"])),
                ):
                    random = fresh()
                    self.assertEqual([draw(random) for _ in range(20)], entry[name], name)
                derived = fresh().derive(7)
                self.assertEqual([derived.next_uint32() for _ in range(20)], entry["derived"])

    def test_bulk_draws_equal_single_draws(self):
        a, b = SeededRandom(11, 3), SeededRandom(11, 3)
        self.assertEqual(a.next_uint32_array(50).tolist(), [b.next_uint32() for _ in range(50)])
        self.assertEqual(a.ints(0, 255, 30).tolist(), [b.int(0, 255) for _ in range(30)])
        self.assertEqual(a.state, b.state)

    def test_normals_match_to_the_last_bits_and_consume_the_same_draws(self):
        for entry in REF["generators"]:
            with self.subTest(make=entry["make"]):
                random = make_generator(entry["make"])
                for got, want in zip([random.normal(1.5, 0.5) for _ in range(20)], entry["normal"]):
                    self.assertNearly(got, want, "normal")
                random = make_generator(entry["make"])
                for got, want in zip([random.normal_paired() for _ in range(20)], entry["normalPaired"]):
                    self.assertNearly(got, want, "normalPaired")
                r = make_generator(entry["make"])
                mixed = [r.next(), r.normal_paired(), r.int(0, 9), r.normal_paired(), r.normal_paired(), r.normal(), r.uniform(10, 20),
                         r.normal_paired(), r.next_uint32(), r.weighted_index([1, 2, 3])]
                want = entry["mixed"]
                for i in (0, 2, 6, 8, 9):
                    self.assertEqual(mixed[i], want[i], f"draw {i} after normals")
                for i in (1, 3, 4, 5, 7):
                    self.assertNearly(mixed[i], want[i], f"normal {i}")

    def test_bad_seeds_are_refused_with_the_typescript_message(self):
        for name in ("fractionalSeed", "unsafeSeed"):
            case = REF["errors"][name]
            with self.assertRaises(ValueError) as raised:
                SeededRandom(case["seed"])
            self.assertEqual(str(raised.exception), case["message"])
        with self.assertRaisesRegex(ValueError, "cannot pick from an empty list"):
            SeededRandom(1).pick([])


class EpochOrderTest(unittest.TestCase):
    def test_orders_are_the_typescript_ones(self):
        for case in REF["epochOrders"]:
            with self.subTest(count=case["count"], seed=case["seed"], epoch=case["epoch"]):
                order = epoch_order(case["count"], case["seed"], case["epoch"], case["shuffle"])
                self.assertEqual(order.dtype, np.int32)
                self.assertEqual(order.tolist(), case["order"])

    def test_batch_counts(self):
        for case in REF["batchCounts"]:
            self.assertEqual(batch_count(case["count"], case["batchSize"], case["dropLast"]), case["batches"], case)

    def test_a_bad_epoch_is_refused_with_the_typescript_message(self):
        for name in ("negativeEpoch", "fractionalEpoch"):
            with self.assertRaises(ValueError) as raised:
                epoch_order(3, 0, REF["errors"][name]["epoch"], True)
            self.assertEqual(str(raised.exception), REF["errors"][name]["message"])


class GeometryTest(CloseMixin):
    def test_crop_regions_and_affines_are_the_typescript_ones(self):
        for case in REF["crops"]:
            with self.subTest(box=case["box"], input=case["inputSize"]):
                size = tuple(case["inputSize"])
                region = box_to_crop_region(tuple(case["box"]), size, case["padding"])
                self.assertRegion(region, case["region"], exact=True)
                for v in case["variants"]:
                    turned = CropRegion(region.center, region.scale, v["rotation"])
                    to_crop = crop_affine(turned, size, v["udp"])
                    flipped = compose_affine((-1, 0, size[0] - 1, 0, 1, 0), to_crop)
                    if v["rotation"] == 0:
                        self.assertEqual(list(to_crop), v["affine"])
                        self.assertEqual(list(flipped), v["flipped"])
                        self.assertEqual(list(invert_affine(to_crop)), v["inverse"])
                        self.assertEqual(list(invert_affine(flipped)), v["flippedInverse"])
                        self.assertEqual(list(apply_affine(to_crop, 10.5, 20.25)), v["point"])
                    else:
                        self.assertRelative(to_crop, v["affine"])
                        self.assertRelative(flipped, v["flipped"])
                        self.assertRelative(invert_affine(to_crop), v["inverse"])
                        self.assertRelative(invert_affine(flipped), v["flippedInverse"])
                        self.assertRelative(apply_affine(to_crop, 10.5, 20.25), v["point"])

    def test_affine_algebra(self):
        ops = REF["affineOps"]
        m = (0.5, -1.25, 3, 2, 0.75, -4)
        self.assertEqual(list(compose_affine(m, (1.5, 0.25, -7, -0.5, 2, 11))), ops["compose"])
        self.assertEqual(list(invert_affine(m)), ops["invert"])
        self.assertEqual(list(apply_affine(m, 17.5, -3.25)), ops["apply"])

    def test_bad_boxes_sizes_and_matrices_raise_the_typescript_messages(self):
        errors = REF["errors"]
        for name in ("boxZeroWidth", "boxNegativeHeight", "fractionalInput", "zeroPadding"):
            case = errors[name]
            with self.subTest(name), self.assertRaises(ValueError) as raised:
                box_to_crop_region(tuple(case["box"]), tuple(case["inputSize"]), case["padding"])
            self.assertEqual(str(raised.exception), case["message"])
        case = errors["regionZeroScale"]
        with self.assertRaises(ValueError) as raised:
            crop_affine(region_of(case["region"]), tuple(case["inputSize"]))
        self.assertEqual(str(raised.exception), case["message"])
        with self.assertRaises(ValueError) as raised:
            invert_affine(tuple(errors["singular"]["affine"]))
        self.assertEqual(str(raised.exception), errors["singular"]["message"])

    def test_flip_permutations_and_upper_body_joints_of_every_known_schema(self):
        for case in REF["schemas"]:
            with self.subTest(schema=case["schema"]["name"]):
                permutation = flip_permutation(case["schema"])
                self.assertEqual(permutation.dtype, np.int32)
                self.assertEqual(permutation.tolist(), case["flipPermutation"])
                self.assertEqual(upper_body_joints(case["schema"]), case["upperBodyJoints"])


PERSON_SCHEMA = REF["schemas"][0]["schema"]


def person_joints() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The fixture's COCO-17 person and visibility patterns, rebuilt as the TypeScript builds them (float32)."""
    base = [100, 40, 95, 35, 105, 35, 90, 38, 110, 38, 80, 70, 120, 70, 70, 100, 130, 100, 65, 130, 135, 130, 88, 140, 112, 140, 86, 190, 114, 190, 85, 240, 115, 240]
    keypoints = np.array([v + 0.37 * (i % 5) - 0.11 * (i % 3) for i, v in enumerate(base)], dtype=np.float32).reshape(17, 2)
    j = np.arange(17)
    visibility = {
        "all": np.where(j % 4 == 3, 1, 2).astype(np.float32),
        "fewUpper": np.where((j == 5) | (j == 6) | (j >= 11), 2, 0).astype(np.float32),
        "eight": np.where(j < 8, 2, 0).astype(np.float32),
    }
    return keypoints, visibility


class AugmentationTest(CloseMixin):
    def check_cases(self, config: dict[str, Any], cases: list[dict[str, Any]]) -> None:
        keypoints, visibilities = person_joints()
        upper = upper_body_joints(PERSON_SCHEMA)
        for case in cases:
            with self.subTest(seed=case["seed"], epoch=case["epoch"], sample=case["sampleIndex"]):
                aug = sample_augmentation(config, SeededRandom(case["seed"], AUGMENT_STREAM, case["epoch"], case["sampleIndex"]))
                want = augmentation_of(case["augmentation"])
                # Everything but the two Box–Muller values comes from uniform draws and must be identical.
                self.assertEqual(aug.__class__(**{**aug.__dict__, "scale": 0.0, "rotation": 0.0}), want.__class__(**{**want.__dict__, "scale": 0.0, "rotation": 0.0}))
                self.assertNearly(aug.scale, want.scale, "scale")
                self.assertNearly(aug.rotation, want.rotation, "rotation")
                region = box_to_crop_region(tuple(case["box"]), (192, 256))
                self.assertRegion(region, case["region"], exact=True)
                self.assertRegion(augment_region(region, aug, config, None, (192, 256)), case["regions"]["none"], exact=False)
                for name, visibility in visibilities.items():
                    got = augment_region(region, aug, config, (keypoints, visibility, upper), (192, 256))
                    self.assertRegion(got, case["regions"][name], exact=False)

    def test_hrnet_recipe_with_occlusion_and_colour_jitter_draws_the_typescript_augmentations(self):
        cases = REF["augmentations"]["cases"]
        self.assertGreater(sum(c["augmentation"]["halfBody"] for c in cases), 2, "the fixture should exercise half-body crops")
        self.check_cases(REF["augmentations"]["config"], cases)

    def test_the_defaults_augment_nothing(self):
        self.check_cases(REF["augmentations"]["defaults"]["config"], REF["augmentations"]["defaults"]["cases"])
        aug = sample_augmentation(REF["augmentations"]["defaults"]["config"], SeededRandom(1))
        self.assertEqual((aug.scale, aug.rotation, aug.flip, aug.occlusion, aug.brightness), (1, 0, False, None, 1))

    def test_half_body_regions_are_the_typescript_ones(self):
        keypoints, visibilities = person_joints()
        upper = upper_body_joints(PERSON_SCHEMA)
        for case in REF["halfBodyRegions"]:
            with self.subTest(visibility=case["visibility"], prefer_upper=case["preferUpper"], size=case["inputSize"]):
                got = half_body_region(keypoints, visibilities[case["visibility"]], upper, case["preferUpper"], tuple(case["inputSize"]))
                self.assertRegion(got, case["region"], exact=True)


class PixelTest(unittest.TestCase):
    def apply(self, case: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
        width, height, slots, slot = case["width"], case["height"], case["slots"], case["slot"]
        image = test_image(width, height, slots)
        aug = augmentation_of(case["augmentation"])
        offset = slot * 3 * width * height
        jitter_colours(image, offset, width * height, aug)
        jittered = image.copy()
        pasted = None
        if aug.occlusion is not None:
            noise = SeededRandom(aug.occlusion.noise_seed) if aug.occlusion.colour is None else None
            paste_occlusion(image, offset, width, height, aug.occlusion, noise)
            pasted = image.copy()
        return jittered, pasted

    def assertSameFloats(self, actual: np.ndarray, encoded: str) -> None:
        expected = floats(encoded)
        differ = np.flatnonzero(actual.view(np.uint32) != expected.view(np.uint32))
        self.assertEqual(differ.size, 0, f"{differ.size} pixels differ, first at {differ[:5]}: {actual[differ[:5]]} vs {expected[differ[:5]]}")

    def test_jitter_and_occlusion_give_the_typescript_pixels_bit_for_bit(self):
        cases = REF["pixels"]["small"] + REF["pixels"]["large"] + [REF["pixels"]["identity"], REF["pixels"]["wide"]]
        self.assertTrue(any(c["pasted"] is not None and c["augmentation"]["occlusion"]["colour"] is None for c in cases), "a noise patch")
        for i, case in enumerate(cases):
            with self.subTest(case=i, size=(case["width"], case["height"]), slot=case["slot"]):
                jittered, pasted = self.apply(case)
                self.assertSameFloats(jittered, case["jittered"])
                if case["pasted"] is None:
                    self.assertIsNone(pasted)
                else:
                    assert pasted is not None
                    self.assertSameFloats(pasted, case["pasted"])

    def test_other_slots_of_the_batch_are_untouched(self):
        case = REF["pixels"]["large"][0]
        before = test_image(16, 20, 2)
        _, pasted = self.apply(case)
        assert pasted is not None
        plane = 3 * 16 * 20
        self.assertTrue(np.array_equal(pasted[:plane], before[:plane]))
        self.assertFalse(np.array_equal(pasted[plane:], before[plane:]))

    def test_a_patch_without_colour_or_noise_is_black_and_its_edges_round_half_up(self):
        case = REF["pixels"]["noNoise"]
        image = test_image(6, 8, 1)
        p = case["patch"]
        paste_occlusion(image, 0, case["width"], case["height"], OcclusionPatch(p["x"], p["y"], p["width"], p["height"], None, p["noiseSeed"]), None)
        self.assertSameFloats(image, case["pasted"])

    def test_pixels_must_be_a_writeable_float32_array(self):
        aug = augmentation_of(REF["pixels"]["small"][0]["augmentation"])
        with self.assertRaisesRegex(ValueError, "float32"):
            jitter_colours(np.zeros(3 * 48), 0, 48, aug)


if __name__ == "__main__":
    unittest.main()
