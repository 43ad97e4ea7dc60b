"""RandAugment / AutoAugment ops, policies, `parse_augment`: each checked for its defining
property on small structured images (gradients, drawn squares), plus exact agreement with Pillow where the
reference re-implements a Pillow op."""

import numpy as np
import pytest
from PIL import Image, ImageOps

from effnetx_jax.data import augment
from effnetx_jax.data.augment import (
    AUTOAUGMENT_CONSTANTS,
    AUTOAUGMENT_POLICIES,
    OPS,
    RANDAUGMENT_CONSTANTS,
    RANDAUGMENT_OPS,
    AutoAugment,
    Op,
    RandAugment,
    parse_augment,
)

FILL = augment.FILL_VALUE


def gradient_image(height=32, width=32):
    """Red grows left to right, green top to bottom, blue along the diagonal: every pixel distinct."""
    ys, xs = np.mgrid[:height, :width]
    red = xs * 255 // (width - 1)
    green = ys * 255 // (height - 1)
    blue = (xs + ys) * 255 // (height + width - 2)
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def square_image(size=32, top=10, left=12, side=6):
    """Black image (no pixel equals the fill value) with a white square."""
    image = np.zeros((size, size, 3), np.uint8)
    image[top : top + side, left : left + side] = 255
    return image


def rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------
# Every op.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("level", [0, 3, 10, 28])
def test_every_op_keeps_shape_and_dtype_and_leaves_input_alone(name, level):
    image = gradient_image(24, 40)  # not square, to catch swapped axes
    original = image.copy()
    for constants in (RANDAUGMENT_CONSTANTS, AUTOAUGMENT_CONSTANTS):
        out = augment.apply_op(name, image, level, constants, rng(level))
        assert out.dtype == np.uint8
        assert out.shape == image.shape
    np.testing.assert_array_equal(image, original)


@pytest.mark.parametrize("name", ["Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout"])
def test_geometric_ops_and_cutout_are_identity_at_magnitude_zero(name):
    image = gradient_image()
    out = augment.apply_op(name, image, 0, RANDAUGMENT_CONSTANTS, rng())
    np.testing.assert_array_equal(out, image)


@pytest.mark.parametrize("name", ["Color", "Contrast", "Brightness", "Sharpness"])
def test_enhance_ops_map_magnitude_to_factor_and_are_identity_at_factor_one(name):
    op = OPS[name]
    # 0.1 at level 0, 1.0 at level 5, 1.9 at level 10: level 0 is *not* the identity for these ops.
    for level, factor in [(0, 0.1), (5, 1.0), (10, 1.9)]:
        assert op.level_to_args(level, RANDAUGMENT_CONSTANTS, rng()) == pytest.approx((factor,))
    image = gradient_image()
    np.testing.assert_array_equal(op.apply(image, 1.0), image)


def test_level_to_args_follow_the_reference_mapping():
    def args(name, level, constants=RANDAUGMENT_CONSTANTS):
        return OPS[name].level_to_args(level, constants, rng())

    assert args("Posterize", 10) == (4,)
    assert args("Posterize", 17) == (6,)
    assert args("Solarize", 10) == (256,)
    assert args("Solarize", 3) == (76,)
    assert args("SolarizeAdd", 10) == (110,)
    assert args("Cutout", 10)[0] == 40
    assert args("Cutout", 10, AUTOAUGMENT_CONSTANTS)[0] == 100
    assert args("AutoContrast", 7) == args("Equalize", 7) == args("Invert", 7) == ()
    # Geometric magnitudes are negated with probability 1/2.
    for name, constants, magnitude in [
        ("Rotate", RANDAUGMENT_CONSTANTS, 30.0),
        ("ShearX", RANDAUGMENT_CONSTANTS, 0.3),
        ("TranslateY", RANDAUGMENT_CONSTANTS, 100.0),
        ("TranslateX", AUTOAUGMENT_CONSTANTS, 250.0),
    ]:
        signed = {OPS[name].level_to_args(10, constants, rng(seed))[0] for seed in range(40)}
        assert signed == {magnitude, -magnitude}


# ---------------------------------------------------------------------------------------------
# Colour ops.
# ---------------------------------------------------------------------------------------------


def test_invert_twice_is_identity_and_matches_pillow():
    image = gradient_image()
    np.testing.assert_array_equal(augment.invert(augment.invert(image)), image)
    np.testing.assert_array_equal(augment.invert(image), np.asarray(ImageOps.invert(Image.fromarray(image))))


def test_posterize_keeps_the_top_bits():
    image = gradient_image()
    np.testing.assert_array_equal(augment.posterize(image, 8), image)
    for bits in range(1, 9):
        pillow = np.asarray(ImageOps.posterize(Image.fromarray(image), bits))
        np.testing.assert_array_equal(augment.posterize(image, bits), pillow)
    # Reference quirk: 0 bits and more than 8 bits (magnitude >= 22.5) both keep the top bit only.
    top_bit = image & 0x80
    np.testing.assert_array_equal(augment.posterize(image, 0), top_bit)
    np.testing.assert_array_equal(augment.posterize(image, 11), top_bit)


def test_solarize_inverts_at_or_above_the_threshold():
    image = gradient_image()
    np.testing.assert_array_equal(augment.solarize(image, 256), image)
    np.testing.assert_array_equal(augment.solarize(image, 300), image)
    np.testing.assert_array_equal(augment.solarize(image, 0), 255 - image)
    pillow = np.asarray(ImageOps.solarize(Image.fromarray(image), 128))
    np.testing.assert_array_equal(augment.solarize(image, 128), pillow)


def test_solarize_add_brightens_only_the_dark_pixels_and_clips():
    image = gradient_image()
    out = augment.solarize_add(image, 110)
    dark = image < 128
    np.testing.assert_array_equal(out[~dark], image[~dark])
    np.testing.assert_array_equal(out[dark], np.minimum(image[dark].astype(int) + 110, 255))
    assert out.max() == 255  # 127 + 110 would not reach it; only the untouched bright pixels do
    np.testing.assert_array_equal(augment.solarize_add(image, 0), image)


def test_auto_contrast_stretches_each_non_constant_channel_to_full_range():
    ys, xs = np.mgrid[:32, :32]
    image = np.stack([60 + xs * 3, 100 + ys, np.full_like(xs, 77)], axis=-1).astype(np.uint8)
    out = augment.auto_contrast(image)
    for c in (0, 1):
        assert out[..., c].min() == 0
        # The reference's float32 scaling can truncate the maximum to 254.
        assert out[..., c].max() >= 254
        # Monotonic: the stretch preserves the order of values.
        order = np.argsort(image[..., c].ravel(), kind="stable")
        assert np.all(np.diff(out[..., c].ravel()[order].astype(int)) >= 0)
    np.testing.assert_array_equal(out[..., 2], image[..., 2])  # constant channel left alone
    full_range = gradient_image()
    np.testing.assert_array_equal(augment.auto_contrast(full_range), full_range)


def test_equalize_matches_pillow_and_spreads_a_narrow_histogram():
    narrow = (100 + gradient_image() // 25).astype(np.uint8)  # values in 100..110
    for image in (gradient_image(), narrow, square_image()):
        pillow = np.asarray(ImageOps.equalize(Image.fromarray(image)))
        np.testing.assert_array_equal(augment.equalize(image), pillow)
    out = augment.equalize(narrow)
    assert out.min() == 0 and out.max() > 200
    constant = np.full((16, 16, 3), 90, np.uint8)
    np.testing.assert_array_equal(augment.equalize(constant), constant)


def test_color_zero_is_grey_and_brightness_scales():
    image = gradient_image()
    grey = augment.color(image, 0.0)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    # Luma of pure white and pure black survive the TF-style conversion exactly.
    extremes = np.array([[[255, 255, 255], [0, 0, 0]]], np.uint8)
    np.testing.assert_array_equal(augment.color(extremes, 0.0), extremes)
    np.testing.assert_array_equal(augment.brightness(image, 0.0), np.zeros_like(image))
    np.testing.assert_array_equal(augment.brightness(image, 2.0), np.minimum(image.astype(int) * 2, 255))
    np.testing.assert_array_equal(augment.brightness(image, 0.5), image // 2)


def test_contrast_blends_towards_the_references_pixel_count_grey():
    # Reference quirk: the "mean" is H * W / 256 (the histogram's total over 256 bins), not the mean luma.
    for size, grey in [(32, 4), (64, 16)]:
        image = gradient_image(size, size)
        np.testing.assert_array_equal(augment.contrast(image, 0.0), np.full_like(image, grey))
    image = gradient_image(64, 64)
    half = augment.contrast(image, 0.5).astype(int)
    np.testing.assert_array_equal(half, (16 + 0.5 * (image.astype(np.float32) - 16)).astype(int))


def test_sharpness_smooths_the_interior_and_keeps_the_border():
    impulse = np.zeros((9, 9, 3), np.uint8)
    impulse[4, 4] = 130
    smoothed = augment.sharpness(impulse, 0.0)
    expected = np.zeros((9, 9), np.uint8)
    expected[3:6, 3:6] = 10  # 130 / 13
    expected[4, 4] = 50  # 130 * 5 / 13
    np.testing.assert_array_equal(smoothed[..., 0], expected)
    # A corner impulse sits on the border, which the reference leaves unsmoothed.
    corner = np.zeros((9, 9, 3), np.uint8)
    corner[0, 0] = 200
    np.testing.assert_array_equal(augment.sharpness(corner, 0.0)[0, 0], [200, 200, 200])
    flat = np.full((9, 9, 3), 77, np.uint8)
    np.testing.assert_array_equal(augment.sharpness(flat, 1.9), flat)
    # Factors above 1 sharpen: the impulse rises above its original value.
    assert augment.sharpness(impulse, 1.9)[4, 4, 0] > 130


# ---------------------------------------------------------------------------------------------
# Geometric ops and Cutout.
# ---------------------------------------------------------------------------------------------


def test_translate_moves_content_by_whole_pixels_and_fills_with_grey():
    image = square_image(top=10, left=12, side=6)
    left = augment.translate_x(image, 5)  # positive: content moves left
    np.testing.assert_array_equal(left[:, :-5], image[:, 5:])
    assert (left[:, -5:] == FILL).all()
    down = augment.translate_y(image, -3)  # negative: content moves down
    np.testing.assert_array_equal(down[3:], image[:-3])
    assert (down[:3] == FILL).all()
    assert (augment.translate_x(image, 100) == FILL).all()


def test_rotate_by_quarter_turns_equals_rot90_counter_clockwise():
    image = gradient_image(32, 32)
    np.testing.assert_array_equal(augment.rotate(image, 90), np.rot90(image, 1))
    np.testing.assert_array_equal(augment.rotate(image, -90), np.rot90(image, -1))
    np.testing.assert_array_equal(augment.rotate(image, 180), np.rot90(image, 2))


def test_rotate_keeps_the_centre_and_fills_the_uncovered_corners():
    image = gradient_image(33, 33)  # odd side: the centre pixel is a fixed point
    out = augment.rotate(image, 45)
    np.testing.assert_array_equal(out[16, 16], image[16, 16])
    for corner in [(0, 0), (0, -1), (-1, 0), (-1, -1)]:
        assert (out[corner] == FILL).all()


def test_shear_shifts_each_row_or_column_in_proportion():
    image = gradient_image(32, 32)
    sheared = augment.shear_x(image, 0.5)  # row y samples column x + y / 2
    np.testing.assert_array_equal(sheared[0], image[0])
    np.testing.assert_array_equal(sheared[10, :-5], image[10, 5:])
    assert (sheared[10, -5:] == FILL).all()
    # Row 1 samples x + 0.5: ties round half away from zero (std::round, as TF), not half to even.
    np.testing.assert_array_equal(sheared[1, :-1], image[1, 1:])
    np.testing.assert_array_equal(augment.shear_x(image, -0.5)[1, 1:], image[1, 1:])
    sheared = augment.shear_y(image, -0.25)  # column x samples row y - x / 4
    np.testing.assert_array_equal(sheared[:, 0], image[:, 0])
    np.testing.assert_array_equal(sheared[3:, 12], image[:-3, 12])
    assert (sheared[:3, 12] == FILL).all()


def test_cutout_fills_a_square_of_side_twice_the_pad_cropped_at_the_border():
    image = square_image(size=64)  # no pixel equals the fill value
    full_squares = 0
    for seed in range(30):
        out = augment.cutout(image, 8, rng(seed))
        filled = (out == FILL).all(axis=-1)
        rows, cols = np.nonzero(filled)
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert filled.sum() == height * width  # one solid rectangle
        assert height <= 16 and width <= 16
        touches_border = rows.min() == 0 or cols.min() == 0 or rows.max() == 63 or cols.max() == 63
        if not touches_border:
            assert (height, width) == (16, 16)
            full_squares += 1
        np.testing.assert_array_equal(out[~filled], image[~filled])
    assert full_squares > 10


# ---------------------------------------------------------------------------------------------
# RandAugment and AutoAugment.
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def op_calls(monkeypatch):
    """Wraps every op of the table so that its real function still runs, recording the names called."""
    calls = []

    def counting(name, op):
        def apply(*args):
            calls.append(name)
            return op.apply(*args)

        return Op(apply, op.level_to_args)

    for name, op in list(OPS.items()):
        monkeypatch.setitem(OPS, name, counting(name, op))
    return calls


@pytest.mark.parametrize("num_layers", [0, 1, 2, 3])
def test_randaugment_always_applies_exactly_num_layers_ops(op_calls, num_layers):
    image = gradient_image(16, 16)
    for seed in range(25):
        op_calls.clear()
        out = RandAugment(num_layers, 10)(image, rng(seed))
        assert len(op_calls) == num_layers
        assert out.dtype == np.uint8 and out.shape == image.shape


def test_randaugment_draws_from_all_sixteen_ops(op_calls):
    assert len(RANDAUGMENT_OPS) == len(set(RANDAUGMENT_OPS)) == 16
    assert set(RANDAUGMENT_OPS) == set(OPS)
    image = gradient_image(8, 8)
    for seed in range(150):
        RandAugment(2, 17)(image, rng(seed))
    assert set(op_calls) == set(RANDAUGMENT_OPS)


def test_autoaugment_v0_policy_structure():
    policy = AUTOAUGMENT_POLICIES["v0"]
    assert len(policy) == 25
    for sub_policy in policy:
        assert len(sub_policy) == 2
        for name, probability, level in sub_policy:
            assert name in OPS
            assert 0.0 <= probability <= 1.0
            assert 0 <= level <= 10
    assert policy[0] == (("Equalize", 0.8, 1), ("ShearY", 0.8, 4))
    assert policy[-1] == (("Color", 0.8, 6), ("Rotate", 0.4, 5))


def test_autoaugment_applies_each_op_with_its_probability(op_calls):
    policy = AUTOAUGMENT_POLICIES["v0"]
    expected = sum(probability for sub_policy in policy for _, probability, _ in sub_policy) / len(policy)
    image = gradient_image(8, 8)
    trials = 2000
    for seed in range(trials):
        AutoAugment()(image, rng(seed))
    # About 1.17 ops per image; the standard deviation of the mean is under 0.02.
    assert len(op_calls) / trials == pytest.approx(expected, abs=0.08)


@pytest.mark.parametrize("augmenter", [RandAugment(2, 10), RandAugment(3, 28), AutoAugment("v0")])
def test_augmenters_are_deterministic_per_seed_and_vary_across_seeds(augmenter):
    image = gradient_image(32, 32)
    first = [augmenter(image, rng(seed)) for seed in range(8)]
    again = [augmenter(image, rng(seed)) for seed in range(8)]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    distinct = {out.tobytes() for out in first}
    assert len(distinct) >= 4


def test_augmenters_reject_images_that_are_not_uint8_rgb():
    with pytest.raises(ValueError, match="uint8"):
        RandAugment()(gradient_image().astype(np.float32), rng())
    with pytest.raises(ValueError, match="uint8"):
        AutoAugment()(gradient_image()[..., :1], rng())


# ---------------------------------------------------------------------------------------------
# parse_augment.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", None),
        ("none", None),
        ("randaugment", RandAugment(2, 10)),
        ("randaugment(2,10)", RandAugment(2, 10)),
        ("randaugment(2, 17)", RandAugment(2, 17)),
        (" RandAugment(3,28) ", RandAugment(3, 28)),
        ("randaugment(1, 7.5)", RandAugment(1, 7.5)),
        ("autoaugment", AutoAugment("v0")),
        ("autoaugment(v0)", AutoAugment("v0")),
    ],
)
def test_parse_augment_accepts_the_documented_forms(spec, expected):
    assert parse_augment(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "randaugmnet(2,10)",
        "randaugment(2)",
        "randaugment()",
        "randaugment(2,31)",
        "randaugment(2,-1)",
        "randaugment(x,10)",
        "autoaugment(v1)",
        "autoaugment()",
        "mixup",
    ],
)
def test_parse_augment_rejects_anything_else_naming_the_setting_and_the_forms(spec):
    with pytest.raises(ValueError) as error:
        parse_augment(spec)
    message = str(error.value)
    assert "config.data.augment" in message
    assert repr(spec) in message
    assert "randaugment(N,M)" in message and "autoaugment(v0)" in message
