"""The model as data: an ml-collections config that fully describes a model, and its validation.

`model_config('efficientnet-x-b0')` gives a config filled from the registry; every field can be
overridden (`cfg.width = 1.1`, `cfg.blocks = (...)`, `cfg.stage_activations = ('relu', ...)`), so
LACS and search describe any model without code. `architecture(cfg)` checks the config and returns
the hashable `Architecture` the Flax module is built from; every error names the key or token. The
checks include the bounds of `limits` (repeats, blocks, kernels, filters, resolution, parameters),
all arithmetic on the description: nothing is traced.
"""

from __future__ import annotations

import dataclasses
import math

import ml_collections

from effnetx_jax import config_files
from effnetx_jax.models import block_string, costs, limits, registry, shapes
from effnetx_jax.models.layers import BATCH_NORM_IMPLS
from effnetx_jax.models.scaling import Architecture, BlockSpec, expand_stages, round_filters, round_repeats

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
            "batch_norm_impl": "auto",
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
        if not 0 < cfg[key] < math.inf:
            _fail(key, f"must be a finite number > 0, got {cfg[key]}")
    for key in ("resolution", "stem_filters", "head_filters", "depth_divisor", "num_classes"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            _fail(key, f"must be a positive integer, got {cfg[key]!r}")
    for key, limit in (
        ("resolution", "MAX_RESOLUTION"),
        ("stem_filters", "MAX_FILTERS"),
        ("head_filters", "MAX_FILTERS"),
    ):
        _check_at_most(key, cfg[key], limit)
    if not isinstance(cfg.min_depth, int) or cfg.min_depth < 0:
        _fail("min_depth", f"must be an integer >= 0 (0: depth_divisor), got {cfg.min_depth!r}")
    for key in ("dropout", "drop_path"):
        if not 0 <= cfg[key] < 1:
            _fail(key, f"must be in [0, 1), got {cfg[key]}")
    if cfg.se_coefficient < 0:
        _fail("se_coefficient", f"must be >= 0, got {cfg.se_coefficient}")
    if not 0 <= cfg.bn_momentum < 1:
        _fail("bn_momentum", f"must be in [0, 1), got {cfg.bn_momentum}")
    if not 0 < cfg.bn_epsilon < math.inf:
        _fail("bn_epsilon", f"must be a finite number > 0, got {cfg.bn_epsilon}")
    if cfg.activation not in block_string.ACTIVATIONS:
        _fail("activation", f"must be one of {block_string.ACTIVATIONS}, got {cfg.activation!r}")
    if cfg.dtype not in DTYPES:
        _fail("dtype", f"must be one of {DTYPES}, got {cfg.dtype!r}")
    if cfg.depthwise_impl not in DEPTHWISE_IMPLS:
        _fail("depthwise_impl", f"must be one of {DEPTHWISE_IMPLS}, got {cfg.depthwise_impl!r}")
    if cfg.batch_norm_impl not in BATCH_NORM_IMPLS:
        _fail("batch_norm_impl", f"must be one of {BATCH_NORM_IMPLS}, got {cfg.batch_norm_impl!r}")
    if isinstance(cfg.blocks, str) or not cfg.blocks:
        _fail("blocks", "must be a non-empty list of block strings")
    # Before decoding them: each string is at least one block.
    _check_at_most("blocks", len(cfg.blocks), "MAX_BLOCKS", what="the number of block strings")


def _check_at_most(key: str, value: int, limit_name: str, what: str = "the value") -> None:
    """Fails `key` if `value` is above `limits.<limit_name>`."""
    if value > getattr(limits, limit_name):
        _fail(key, f"{what} is {value:,}, {_above(limit_name)}")


def _above(limit_name: str, unit: str = "") -> str:
    """'above the bound N <unit> (effnetx_jax.models.limits.NAME)': where to read why the bound is N."""
    limit = getattr(limits, limit_name)
    return f"above the bound {limit:,}{unit} (effnetx_jax.models.limits.{limit_name})"


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
    stages = decode_stages(cfg)
    _check_depth(cfg, stages)

    def scale(filters: int) -> int:
        return round_filters(filters, cfg.width, cfg.depth_divisor, cfg.min_depth)

    stem_filters = scale(cfg.stem_filters)
    arch = Architecture(
        name=cfg.name,
        resolution=cfg.resolution,
        stem_filters=stem_filters,
        blocks=expand_stages(
            stages,
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
    sizes = shapes.block_input_sizes(arch, arch.resolution)
    _check_widths(cfg, arch, stages)
    _check_space_to_batch(arch, sizes)
    _check_kernels(cfg, arch, stages, sizes)
    _check_parameter_count(arch)
    return arch


def _where(cfg, spec: BlockSpec) -> str:
    return f"stage {spec.stage + 1} ({cfg.blocks[spec.stage]!r}, block {spec.index})"


def _check_depth(cfg, stages: list[block_string.BlockArgs]) -> None:
    """Bounds the blocks after depth scaling before `expand_stages` lists them one by one (a billion
    repeats would hang there)."""
    repeats = [round_repeats(args.num_repeat, cfg.depth) for args in stages]
    for stage, (args, count) in enumerate(zip(stages, repeats, strict=True)):
        if count > limits.MAX_REPEATS:
            _fail(
                "depth",
                f"{cfg.depth:g} scales stage {stage + 1} ({cfg.blocks[stage]!r}, token 'r{args.num_repeat}') to "
                f"{count:,} repeats, {_above('MAX_REPEATS', ' per stage')}",
            )
    _check_at_most("blocks", sum(repeats), "MAX_BLOCKS", what=f"the number of blocks at depth {cfg.depth:g}")


def _check_widths(cfg, arch: Architecture, stages: list[block_string.BlockArgs]) -> None:
    """Every layer's channels after width scaling (and x4 in a space-to-depth region)."""
    for key, channels in (("stem_filters", arch.stem_filters), ("head_filters", arch.head_filters)):
        if channels > limits.MAX_FILTERS:
            _fail(key, f"{cfg[key]} is {channels:,} channels at width {cfg.width:g}, {_above('MAX_FILTERS')}")
    for spec in arch.blocks:
        args = stages[spec.stage]
        # Output before input: a repeat's input is its stage's output width.
        for token, channels in (
            (f"o{args.output_filters}", spec.output_filters),
            (f"i{args.input_filters}", spec.input_filters),
            (f"e{args.expand_ratio}", spec.expanded_filters),
        ):
            if channels > limits.MAX_FILTERS:
                _fail(
                    "blocks",
                    f"{_where(cfg, spec)}, token {token!r}: {channels:,} channels at width {cfg.width:g} (after width "
                    f"scaling and space-to-depth), {_above('MAX_FILTERS', ' per layer')}",
                )


def _check_space_to_batch(arch: Architecture, sizes) -> None:
    for spec, size in zip(arch.blocks, sizes, strict=True):
        if spec.space_to_batch and not shapes.space_to_batch_fits(spec, *size):
            _fail(
                "blocks",
                f"stage {spec.stage + 1} (block {spec.index}): space-to-batch b{spec.space_to_batch} needs "
                f"input and output feature maps divisible by {spec.space_to_batch}, got a "
                f"{size[0]}x{size[1]} input at resolution {arch.resolution}",
            )


def _check_kernels(cfg, arch: Architecture, stages: list[block_string.BlockArgs], sizes) -> None:
    """A kernel wider than `limits.ANY_MAP_KERNEL` must fit the feature map its conv meets (after the
    space-to-depth conv halved it): on a side of n, SAME padding gives a tap beyond 2n - 1 nothing but
    padding at every output position, a weight that never trains and work that only adds zeros."""
    for spec, size in zip(arch.blocks, sizes, strict=True):
        side = min(shapes.body_size(spec, *size))
        widest = max(limits.ANY_MAP_KERNEL, 2 * side - 1)
        if spec.kernel_size > widest:
            kernel, free = spec.kernel_size, limits.ANY_MAP_KERNEL
            _fail(
                "blocks",
                f"{_where(cfg, spec)}, token 'k{stages[spec.stage].kernel_size}': its {kernel}x{kernel} kernel meets "
                f"a {side}x{side} feature map at resolution {arch.resolution}; a kernel wider than {free} "
                f"(effnetx_jax.models.limits.ANY_MAP_KERNEL) must be at most 2 x {side} - 1 = {widest}, past which "
                "its taps only ever meet padding",
            )


def _check_parameter_count(arch: Architecture) -> None:
    count = costs.parameter_count(arch)
    if count > limits.MAX_PARAMETERS:
        part, part_count = _largest_part(arch)
        config_files.fail(
            "model",
            f"{count:,} trainable parameters, {_above('MAX_PARAMETERS')}; the largest part is {part} "
            f"with {part_count:,}",
        )


def _largest_part(arch: Architecture) -> tuple[str, int]:
    """The stem, a block or the head (with the classifier), whichever has the most parameters."""
    parts = {
        "the stem": costs.stem_layers(arch, arch.resolution),
        **{f"block {cost.spec.index} (stage {cost.spec.stage + 1})": cost.layers for cost in costs.block_costs(arch)},
        "the head and classifier": costs.head_layers(arch, arch.resolution),
    }
    counts = {name: sum(layer.parameters for layer in layers) for name, layers in parts.items()}
    name = max(counts, key=counts.get)
    return name, counts[name]
