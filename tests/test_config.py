"""The model is data: every value of a variant can be overridden, bad configs fail with the key."""

import re

import pytest

from effnetx_jax.models import architecture, model_config


def test_width_and_depth_overrides():
    cfg = model_config("efficientnet-x-b0")
    cfg.width, cfg.depth = 1.1, 1.2
    arch = architecture(cfg)
    assert (arch.stem_filters, arch.head_filters, len(arch.blocks)) == (32, 1408, 23)
    assert [spec.output_filters for spec in arch.blocks[-3:]] == [208, 352, 352]


def test_blocks_override():
    cfg = model_config("efficientnet-b0")
    cfg.blocks = ("r1_k3_s11_e1_i32_o16_se0.25", "r2_k5_s22_e4_i16_o24_f1_a0")
    arch = architecture(cfg)
    assert [spec.block_type for spec in arch.blocks] == ["mbconv", "fused", "fused"]
    assert [spec.activation for spec in arch.blocks] == ["swish", "relu", "relu"]


def test_per_stage_activation_and_conv_type():
    cfg = model_config("efficientnet-b0")
    cfg.stage_activations = ("relu",) * 3 + ("swish",) * 4
    cfg.stage_conv_types = ("depthwise", "fused", "fused") + ("depthwise",) * 4
    arch = architecture(cfg)
    by_stage = {spec.stage: spec for spec in arch.blocks}
    assert [by_stage[s].activation for s in range(7)] == ["relu"] * 3 + ["swish"] * 4
    assert [by_stage[s].fused for s in range(7)] == [False, True, True] + [False] * 4


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("width", 0.0, "config.model.width"),
        ("resolution", 0, "config.model.resolution"),
        ("dropout", 1.0, "config.model.dropout"),
        ("activation", "gelu", "config.model.activation"),
        ("dtype", "float16", "config.model.dtype"),
        ("depthwise_impl", "cudnn", "config.model.depthwise_impl"),
        ("stage_activations", ("relu",), "one entry per stage (7)"),
        ("stage_conv_types", ("fused",) * 6 + ("grouped",), "config.model.stage_conv_types"),
        ("blocks", (), "config.model.blocks"),
    ],
)
def test_bad_values_name_the_key(key, value, message):
    cfg = model_config("efficientnet-x-b0")
    cfg[key] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        architecture(cfg)


def test_unknown_key_is_named():
    cfg = model_config("efficientnet-x-b0")
    cfg.widht = 1.1
    with pytest.raises(ValueError, match=r"config\.model\.widht: unknown key"):
        architecture(cfg)


def test_bad_block_string_in_config_names_the_token():
    cfg = model_config("efficientnet-x-b0")
    cfg.blocks = ("r1_k3_s11_e1_i32_o16_q7",)
    with pytest.raises(ValueError, match="'q7'"):
        architecture(cfg)


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model 'efficientnet-x-b9'"):
        model_config("efficientnet-x-b9")


def test_space_to_batch_needs_divisible_feature_map():
    cfg = model_config("efficientnet-x-b0")
    cfg.blocks = (*cfg.blocks[:-1], "r1_k3_s11_e6_i192_o320_se0.25_b2_a0")
    with pytest.raises(ValueError, match=r"space-to-batch b2 needs .* 7x7 input"):
        architecture(cfg)
