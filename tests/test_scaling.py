"""Scaling rules and the space-to-depth rewrite, against reference §1.3-1.5."""

import pytest

from effnetx_jax.models import architecture, model_config, round_filters, round_repeats


@pytest.mark.parametrize(
    ("filters", "width", "expected"),
    [(16, 1.1, 16), (40, 1.1, 48), (32, 1.4, 48), (1280, 1.1, 1408), (32, 1.0, 32), (32, 0.0, 32), (8, 0.1, 8)],
)
def test_round_filters(filters, width, expected):
    assert round_filters(filters, width) == expected


def test_round_filters_never_drops_more_than_ten_percent():
    for filters in range(8, 400, 4):
        for width in (0.9, 1.05, 1.13, 1.27, 1.54, 1.96, 2.75, 3.26):
            assert round_filters(filters, width) >= 0.9 * filters * width
            assert round_filters(filters, width) % 8 == 0


def test_round_repeats_is_ceil():
    assert [round_repeats(r, 1.1) for r in (1, 2, 3, 4)] == [2, 3, 4, 5]
    assert round_repeats(3, 3.1) == 10


# Repeats per stage and block counts from reference §1.5.
REPEATS = {
    "efficientnet-x-b0": (1, 2, 2, 3, 3, 4, 1),
    "efficientnet-x-b1": (2, 3, 3, 4, 4, 5, 2),
    "efficientnet-x-b3": (2, 3, 3, 5, 5, 6, 2),
    "efficientnet-x-b4": (2, 4, 4, 6, 6, 8, 2),
    "efficientnet-x-b5": (3, 5, 5, 7, 7, 9, 3),
    "efficientnet-x-b6": (3, 6, 6, 8, 8, 11, 3),
    "efficientnet-x-b7": (4, 7, 7, 10, 10, 13, 4),
}
BLOCKS = {
    "efficientnet": (16, 23, 23, 26, 32, 39, 45, 55),
    "efficientnet-x": (16, 23, 23, 26, 32, 39, 45, 55),
    "efficientnet-x-tpu": (16, 23, 24, 29, 42, 48, 55, 58),
    "efficientnet-x-gpu": (16, 23, 23, 29, 42, 56, 72, 90),
}
STEM_HEAD = {"b0": (32, 1280), "b2": (32, 1408), "b3": (40, 1536), "b4": (48, 1792), "b7": (64, 2560)}


@pytest.mark.parametrize(("name", "repeats"), REPEATS.items())
def test_repeats_per_stage(name, repeats):
    stages = [spec.stage for spec in architecture(model_config(name)).blocks]
    assert tuple(stages.count(stage) for stage in range(7)) == repeats


@pytest.mark.parametrize("family", BLOCKS)
def test_block_counts(family):
    counts = tuple(len(architecture(model_config(f"{family}-b{i}")).blocks) for i in range(8))
    assert counts == BLOCKS[family]


@pytest.mark.parametrize(("size", "channels"), STEM_HEAD.items())
def test_stem_and_head_scale_with_width(size, channels):
    for family in ("efficientnet", "efficientnet-x"):
        arch = architecture(model_config(f"{family}-{size}"))
        assert (arch.stem_filters, arch.head_filters) == channels


def test_x_b0_space_to_depth_rewrite():
    blocks = architecture(model_config("efficientnet-x-b0")).blocks
    first, second, third = blocks[:3]
    # Block 0: s2d conv 32 -> 128, depthwise kernel (3+1)//2 = 2 on 128 channels, project to 16*4.
    assert first.space_to_depth_conv and first.kernel_size == 2 and first.strides == (1, 1)
    assert (first.input_channels, first.input_filters, first.output_filters) == (32, 128, 64)
    # Block 1: stage 2 loses its stride (s2d already reduced) and keeps the nominal widths 16 -> 24.
    assert second.fused and second.strides == (1, 1) and second.kernel_size == 3
    assert (second.input_channels, second.input_filters, second.expanded_filters) == (64, 16, 96)
    assert not second.space_to_depth_conv and not second.has_residual
    assert (third.input_filters, third.expanded_filters, third.has_residual) == (24, 144, True)


@pytest.mark.parametrize(
    ("name", "index", "se_filters"),
    [
        ("efficientnet-x-b0", 0, 32),  # int(128 * 0.25 * 4) // 4: the //4 of the s2d block
        ("efficientnet-x-b0", 1, 16),  # int(16 * 0.25 * 4): nominal, not the 64 real channels
        ("efficientnet-x-b0", 15, 192),
        ("efficientnet-x-b1", 1, 32),  # int(64 * 0.25 * 2): d2 repeats are not divided by 4
        ("efficientnet-x-b7", 1, 32),
        ("efficientnet-x-b7", 3, 32),
        ("efficientnet-b0", 0, 8),
        ("efficientnet-b0", 15, 48),
    ],
)
def test_se_widths(name, index, se_filters):
    assert architecture(model_config(name)).blocks[index].se_filters == se_filters


def test_drop_path_rate_grows_linearly_over_blocks():
    blocks = architecture(model_config("efficientnet-b0")).blocks
    assert blocks[0].drop_path_rate == 0
    assert blocks[8].drop_path_rate == pytest.approx(0.2 * 8 / 16)
