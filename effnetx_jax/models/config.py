"""The model as data: an ml-collections config that fully describes a model, and its validation.

`model_config('efficientnet-x-b0')` gives a config filled from the registry; every field can be
overridden (`cfg.width = 1.1`, `cfg.blocks = (...)`, `cfg.stage_activations = ('relu', ...)`), so
LACS and search describe any model without code. `architecture(cfg)` checks the config and returns
the hashable `Architecture` the Flax module is built from; every error names the key or token.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from effnetx_jax import config_files
from effnetx_jax.models import block_string, registry, shapes
from effnetx_jax.models.scaling import Architecture, expand_stages, round_filters

DTYPES = ("float32", "bfloat16")
DEPTHWISE_IMPLS = ("auto", "xla", "shifted")
CONV_TYPES = ("depthwise", "fused")


def model_config(name: str = "efficientnet-x-b0") -> ml_collections.ConfigDict:
    """All fields of a registered variant, ready to override."""
    variant = registry.get_variant(name)
    return ml_collections.ConfigDict(
        {
            "name": name,
            "width": float(variant.width),
            "depth": float(variant.depth),
            "resolution": variant.resolution,
            "dropout": float(variant.dropout),
            # 1 - the reference's survival_prob 0.8; the rate grows linearly over the blocks.
            "drop_path": 0.2,
            "se_coefficient": float(variant.se_coefficient),
            "use_se": True,
            "blocks": tuple(variant.blocks),
            # One entry per stage ('relu'/'swish', 'depthwise'/'fused'), or empty to keep the strings'.
            "stage_activations": (),
            "stage_conv_types": (),
            # Stem, head and every block string without an `a` token use this activation.
            "activation": variant.activation,
            "stem_filters": 32,
            "head_filters": 1280,
            "depth_divisor": 8,
            "min_depth": 0,  # 0: the divisor, as the reference's None
            "bn_momentum": 0.99,
            "bn_epsilon": 1e-3,
            "num_classes": 1000,
            "dtype": "float32",
            "depthwise_impl": "auto",
        }
    )


_KNOWN_KEYS = frozenset(model_config().keys())


def _fail(key: str, reason: str):
    config_files.fail(f"model.{key}", reason)


def _check_fields(cfg) -> None:
    unknown = sorted(set(cfg.keys()) - _KNOWN_KEYS)
    if unknown:
        _fail(unknown[0], f"unknown key; model config keys are {', '.join(sorted(_KNOWN_KEYS))}")
    missing = sorted(_KNOWN_KEYS - set(cfg.keys()))
    if missing:
        _fail(missing[0], "missing key; start from effnetx_jax.models.model_config(name)")
    for key in ("width", "depth"):
        if not cfg[key] > 0:
            _fail(key, f"must be > 0, got {cfg[key]}")
    for key in ("resolution", "stem_filters", "head_filters", "depth_divisor", "num_classes"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            _fail(key, f"must be a positive integer, got {cfg[key]!r}")
    for key in ("dropout", "drop_path"):
        if not 0 <= cfg[key] < 1:
            _fail(key, f"must be in [0, 1), got {cfg[key]}")
    if cfg.se_coefficient < 0:
        _fail("se_coefficient", f"must be >= 0, got {cfg.se_coefficient}")
    if not 0 <= cfg.bn_momentum < 1:
        _fail("bn_momentum", f"must be in [0, 1), got {cfg.bn_momentum}")
    if cfg.activation not in block_string.ACTIVATIONS:
        _fail("activation", f"must be one of {block_string.ACTIVATIONS}, got {cfg.activation!r}")
    if cfg.dtype not in DTYPES:
        _fail("dtype", f"must be one of {DTYPES}, got {cfg.dtype!r}")
    if cfg.depthwise_impl not in DEPTHWISE_IMPLS:
        _fail("depthwise_impl", f"must be one of {DEPTHWISE_IMPLS}, got {cfg.depthwise_impl!r}")
    if isinstance(cfg.blocks, str) or not cfg.blocks:
        _fail("blocks", "must be a non-empty list of block strings")


def _stage_overrides(cfg, key: str, allowed: tuple[str, ...]) -> list[str] | None:
    values = cfg[key]
    if not values:
        return None
    if isinstance(values, str) or len(values) != len(cfg.blocks):
        _fail(key, f"needs one entry per stage ({len(cfg.blocks)}), got {values!r}")
    for value in values:
        if value not in allowed:
            _fail(key, f"entries must be one of {allowed}, got {value!r}")
    return list(values)


def decode_stages(cfg) -> list[block_string.BlockArgs]:
    """The config's block strings with the per-stage activation and conv-type overrides applied."""
    stages = block_string.decode_all(cfg.blocks)
    activations = _stage_overrides(cfg, "stage_activations", block_string.ACTIVATIONS)
    conv_types = _stage_overrides(cfg, "stage_conv_types", CONV_TYPES)
    for index, args in enumerate(stages):
        changes = {}
        if activations:
            changes["activation"] = activations[index]
        if conv_types:
            changes["fused"] = conv_types[index] == "fused"
        if changes:
            stages[index] = dataclasses.replace(args, **changes)
            block_string.check(stages[index])
    return stages


def architecture(cfg) -> Architecture:
    """Validates a model config and builds its `Architecture`."""
    _check_fields(cfg)

    def scale(filters: int) -> int:
        return round_filters(filters, cfg.width, cfg.depth_divisor, cfg.min_depth)

    stem_filters = scale(cfg.stem_filters)
    arch = Architecture(
        name=cfg.name,
        resolution=cfg.resolution,
        stem_filters=stem_filters,
        blocks=expand_stages(
            decode_stages(cfg),
            width=cfg.width,
            depth=cfg.depth,
            stem_filters=stem_filters,
            activation=cfg.activation,
            se_coefficient=cfg.se_coefficient,
            use_se=cfg.use_se,
            drop_path=cfg.drop_path,
            depth_divisor=cfg.depth_divisor,
            min_depth=cfg.min_depth,
        ),
        head_filters=scale(cfg.head_filters),
        num_classes=cfg.num_classes,
        dropout=cfg.dropout,
        activation=cfg.activation,
        bn_momentum=cfg.bn_momentum,
        bn_epsilon=cfg.bn_epsilon,
    )
    _check_space_to_batch(arch)
    return arch


def _check_space_to_batch(arch: Architecture) -> None:
    for spec, size in zip(arch.blocks, shapes.block_input_sizes(arch, arch.resolution), strict=True):
        if spec.space_to_batch and not shapes.space_to_batch_fits(spec, *size):
            _fail(
                "blocks",
                f"stage {spec.stage + 1} (block {spec.index}): space-to-batch b{spec.space_to_batch} needs "
                f"input and output feature maps divisible by {spec.space_to_batch}, got a "
                f"{size[0]}x{size[1]} input at resolution {arch.resolution}",
            )
