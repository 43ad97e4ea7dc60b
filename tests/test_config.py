"""The model is data: every value of a variant can be overridden, bad configs fail with the key."""

import re

import pytest

from configs import quickstart
from effnetx_jax import recipe
from effnetx_jax.errors import UserError
from effnetx_jax.models import VARIANTS, architecture, model_config
from effnetx_jax.train.plan import check_config


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
        ("batch_norm_impl", "cudnn", "config.model.batch_norm_impl"),
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


# ---------------------------------------------------------------------------------------------------
# Bounds (effnetx_jax.models.limits), checked before anything is unrolled or traced
# ---------------------------------------------------------------------------------------------------


def _refused(message, **overrides):
    cfg = model_config("efficientnet-x-b0")
    cfg.update(overrides)
    with pytest.raises(UserError) as error:
        architecture(cfg)
    assert re.search(message, str(error.value)), str(error.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # A billion repeats per stage: refused before expand_stages would list them.
        ({"depth": 1e9}, r"config\.model\.depth: 1e\+09 scales stage 1 .*token 'r1'.* 256 per stage .*MAX_REPEATS"),
        ({"depth": 70.0}, r"stage 6 .*'r4'\) to 280 repeats, above the bound 256"),
        (
            {"blocks": ("r200_k3_s11_e1_i16_o16",) * 6},
            r"config\.model\.blocks: the number of blocks at depth 1 is 1,200, above the bound 1,024 .*MAX_BLOCKS",
        ),
        (
            {"blocks": ("r1_k3_s11_e1_i16_o16",) * 1025},
            r"config\.model\.blocks: the number of block strings is 1,025, above the bound 1,024",
        ),
        (
            {"width": 2.0, "blocks": ("r1_k3_s11_e1_i32_o10000",)},
            r"config\.model\.blocks: stage 1 .*token 'o10000': 20,000 channels at width 2 .*16,384 per layer",
        ),
        ({"blocks": ("r1_k3_s11_e32_i1024_o16",)}, r"token 'e32': 32,768 channels .*MAX_FILTERS"),
        ({"width": 60.0}, r"config\.model\.head_filters: 1280 is 76,800 channels at width 60, above the bound 16,384"),
        ({"stem_filters": 20000}, r"config\.model\.stem_filters: the value is 20,000, above the bound 16,384"),
        ({"resolution": 10**9}, r"config\.model\.resolution: the value is 1,000,000,000, above the bound 4,096"),
        ({"depth": float("inf")}, r"config\.model\.depth: must be a finite number > 0"),
        ({"bn_epsilon": 0.0}, r"config\.model\.bn_epsilon: must be a finite number > 0"),
        ({"min_depth": -1}, r"config\.model\.min_depth: must be an integer >= 0"),
        # 10^11 classes: 1.3e14 parameters, counted from the shapes (nothing is built).
        (
            {"num_classes": 10**11},
            r"config\.model: 128,100,006,303,104 trainable parameters, above the bound 2,000,000,000 "
            r"\(effnetx_jax\.models\.limits\.MAX_PARAMETERS\); the largest part is the head and classifier",
        ),
    ],
)
def test_bounds_name_the_key_and_the_limit(overrides, message):
    _refused(message, **overrides)


def test_a_kernel_must_fit_the_feature_map_it_meets():
    # Three stride-2 blocks at 32 px meet 16x16, 8x8 and 4x4 maps: a 9x9 kernel fits the first two
    # (at most 2 x side - 1), not the third; at 64 px the third map is 8x8 and it fits.
    blocks = ("r1_k9_s22_e6_i32_o16",) * 3
    _refused(
        r"stage 3 .*token 'k9': its 9x9 kernel meets a 4x4 feature map at resolution 32;.* = 7",
        blocks=blocks,
        resolution=32,
    )
    cfg = model_config("efficientnet-x-b0")
    cfg.update(blocks=blocks, resolution=64)
    assert [spec.kernel_size for spec in architecture(cfg).blocks] == [9, 9, 9]


def test_space_to_depth_halves_the_kernel_and_its_map():
    # k15 in a d1 block is an 8x8 kernel on the map the s2d conv halved: 4x4 at 16 px, 8x8 at 32 px.
    _refused(
        r"token 'k15': its 8x8 kernel meets a 4x4 feature map at resolution 16",
        blocks=("r1_k15_s11_e1_i32_o16_d1",),
        resolution=16,
    )
    cfg = model_config("efficientnet-x-b0")
    cfg.update(blocks=("r1_k15_s11_e1_i32_o16_d1",), resolution=32)
    assert architecture(cfg).blocks[0].kernel_size == 8


def test_small_kernels_run_on_any_map():
    # The official strings at 32 px end on 1x1 maps with 3x3 and 5x5 kernels (smoke runs and tests).
    cfg = model_config("efficientnet-b0")
    cfg.update(resolution=32, blocks=(*cfg.blocks, "r1_k7_s11_e6_i320_o320"))
    assert architecture(cfg).blocks[-1].kernel_size == 7


def test_bounds_leave_room_above_the_largest_published_models():
    for name in VARIANTS:
        architecture(model_config(name))
    # EfficientNet-L2 (width 4.3, depth 5.3, 800 px; 480M parameters with its own head) passes too.
    cfg = model_config("efficientnet-b0")
    cfg.update(width=4.3, depth=5.3, resolution=800)
    assert len(architecture(cfg).blocks) == 88


# ---------------------------------------------------------------------------------------------------
# Trainer config: optimiser, schedule and regularisation values (train.plan.check_config)
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("learning_rate", -1.0, r"config\.learning_rate: must be a finite number >= 0 \(0 keeps the weights frozen"),
        ("learning_rate", float("nan"), r"config\.learning_rate: must be a finite number >= 0"),
        ("weight_decay", -1e-5, r"config\.weight_decay: must be in \[0, 1\), got -1e-05"),
        ("label_smoothing", 1.0, r"config\.label_smoothing: must be in \[0, 1\)"),
        ("ema_decay", 1.5, r"config\.ema_decay: must be in \[0, 1\)"),
        ("momentum", 1.0, r"config\.momentum: must be in \[0, 1\)"),
        ("rmsprop_decay", -0.1, r"config\.rmsprop_decay: must be in \[0, 1\)"),
        ("rmsprop_epsilon", 0.0, r"config\.rmsprop_epsilon: must be a finite number > 0"),
        ("warmup_epochs", -1.0, r"config\.warmup_epochs: must be a finite number >= 0"),
        ("warmup_epochs", 15.0, r"config\.warmup_epochs: must be below total_epochs=15 .*got 15"),
        ("lr_decay_factor", 1.5, r"config\.lr_decay_factor: must be in \(0, 1\]"),
        ("lr_decay_epochs", 0.0, r"config\.lr_decay_epochs: must be a finite number > 0"),
        ("batch_size", 0, r"config\.batch_size: must be a positive integer"),
    ],
)
def test_bad_recipe_values_name_the_key_and_the_bound(key, value, message):
    config = quickstart.get_config()
    config[key] = value
    with pytest.raises(UserError, match=message):
        check_config(config, num_classes=10)


def test_zero_learning_rate_and_long_warm_up_in_steps_are_allowed():
    config = quickstart.get_config()
    check_config(config, num_classes=10)
    # 0 freezes the weights (test_finetune loads weights and checks they arrive unchanged with it).
    config.learning_rate = 0.0
    # A run counted in steps may end inside the recipe's warm-up (`--config.total_steps=1` to try a config).
    config.total_epochs, config.total_steps = 0.0, 1
    check_config(config, num_classes=10)


@pytest.mark.parametrize("name", VARIANTS)
def test_the_packaged_recipe_starts_any_registered_variant(name):
    config = recipe.get_config(name)
    assert config.model.to_dict() == {**model_config(name).to_dict(), "dtype": "bfloat16"}
    assert (config.batch_size, config.learning_rate, config.optimizer) == (2048, 0.016, "rmsprop")
    check_config(config, num_classes=1000)


def test_the_configs_build_on_the_packaged_recipe_with_the_same_keys():
    from configs import b3

    def keys(config, prefix=""):
        return {f"{prefix}{key}" for key in config} | {
            nested for key in config if hasattr(config[key], "keys") for nested in keys(config[key], f"{key}.")
        }

    assert keys(b3.get_config()) == keys(recipe.get_config("efficientnet-x-b3"))
    assert b3.get_config().to_dict() == recipe.get_config("efficientnet-x-b3").to_dict()


def test_the_recipe_names_an_unknown_variant():
    with pytest.raises(UserError, match=r"unknown model 'efficientnet-x-b9'; registered models: "):
        recipe.get_config("efficientnet-x-b9")


def test_the_public_api_keeps_its_documented_names():
    import effnetx_jax
    from effnetx_jax import models, train, weights

    assert sorted(effnetx_jax.__all__) == ["create_model", "load", "model_config", "train_and_evaluate"]
    assert effnetx_jax.load is weights.load and effnetx_jax.create_model is models.create_model
    assert effnetx_jax.model_config is models.model_config
    assert effnetx_jax.train_and_evaluate is train.train_and_evaluate
    with pytest.raises(AttributeError, match="has no attribute 'lod'"):
        effnetx_jax.lod  # noqa: B018
