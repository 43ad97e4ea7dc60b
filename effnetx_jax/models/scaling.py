"""Scaling rules and the expansion of block strings into the concrete blocks a model builds.

Everything here follows `efficientnet_model.round_filters`, `round_repeats` and `Model._build` of the
official TF code (reference §1.3-1.5), including the space-to-depth rewrite of the first stages.
"""

from __future__ import annotations

import dataclasses
import math

from effnetx_jax.models.block_string import BlockArgs
from effnetx_jax.models.blocks import BLOCK_TYPES


def round_filters(filters: int, width: float, divisor: int = 8, min_depth: int = 0) -> int:
    """Scales `filters` by `width`, rounds to a multiple of `divisor`, never more than 10% down."""
    if not width:
        return filters
    scaled = filters * width
    new_filters = max(min_depth or divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new_filters < 0.9 * scaled:
        new_filters += divisor
    return int(new_filters)


def round_repeats(repeats: int, depth: float) -> int:
    return repeats if not depth else math.ceil(depth * repeats)


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One block as built: widths after scaling and the space-to-depth rewrite.

    `input_filters` is the nominal input width the reference computes expansion and SE widths from;
    `input_channels` is the width of the tensor that actually arrives (they differ right after a
    space-to-depth region, e.g. EfficientNet-X-B0 block 1: nominal 16, actual 64).
    """

    index: int
    stage: int
    input_channels: int
    input_filters: int
    output_filters: int
    kernel_size: int
    strides: tuple[int, int]
    expand_ratio: int
    se_filters: int
    conv_type: int
    fused: bool
    space_to_depth_conv: bool
    space_to_depth_region: bool
    activation: str
    id_skip: bool
    space_to_batch: int
    drop_path_rate: float

    @property
    def body_input_channels(self) -> int:
        """Width entering the expand/fused/depthwise conv: the s2d conv outputs `input_filters`."""
        return self.input_filters if self.space_to_depth_conv else self.input_channels

    @property
    def expanded_filters(self) -> int:
        """Width after the block type's own convs, where SE and the projection start."""
        return BLOCK_TYPES[self.block_type].expanded_filters(self)

    @property
    def has_residual(self) -> bool:
        """Whether the block adds its input: its block type's rule (`block_parts.Block.has_residual`)."""
        return BLOCK_TYPES[self.block_type].has_residual(self)

    @property
    def block_type(self) -> str:
        """The key of the block's module in `blocks.BLOCK_TYPES`, from the grammar's `c` and `f` tokens."""
        if self.conv_type == 1:
            return "conv"
        return "fused" if self.fused else "mbconv"


@dataclasses.dataclass(frozen=True)
class Architecture:
    """Everything the Flax module needs to build a model; hashable so it can be a module field."""

    name: str
    resolution: int
    stem_filters: int
    blocks: tuple[BlockSpec, ...]
    head_filters: int
    num_classes: int
    dropout: float
    activation: str
    bn_momentum: float
    bn_epsilon: float


def _se_filters(args: BlockArgs, se_coefficient: float, use_se: bool) -> int:
    if not (use_se and args.has_se):
        return 0
    reduced = int(args.input_filters * (args.se_ratio * (se_coefficient or 1)))
    # The SE ratio refers to the width before space-to-depth multiplied it by 4.
    if args.space_to_depth == 1:
        reduced //= 4
    return max(1, reduced)


def expand_stages(
    stages: list[BlockArgs],
    *,
    width: float,
    depth: float,
    stem_filters: int,
    activation: str,
    se_coefficient: float,
    use_se: bool = True,
    drop_path: float = 0.0,
    depth_divisor: int = 8,
    min_depth: int = 0,
) -> tuple[BlockSpec, ...]:
    """Scales the stages and unrolls their repeats into blocks, as `Model._build` does."""

    def scale(filters: int) -> int:
        return round_filters(filters, width, depth_divisor, min_depth)

    built: list[tuple[int, BlockArgs]] = []
    for stage, args in enumerate(stages):
        input_filters, output_filters = scale(args.input_filters), scale(args.output_filters)
        repeats = round_repeats(args.num_repeat, depth)
        current = dataclasses.replace(
            args, input_filters=input_filters, output_filters=output_filters, num_repeat=repeats
        )
        if current.space_to_depth:
            # Widths x4 and kernel (k+1)//2 while the region runs at half resolution; a stride-2
            # stage ends the region: its first block drops the stride (s2d already reduced) and
            # the repeats go back to the plain widths and kernel.
            factor = 4 // (args.strides[0] * args.strides[1])
            current = dataclasses.replace(
                current,
                input_filters=input_filters * factor,
                output_filters=output_filters * factor,
                kernel_size=(args.kernel_size + 1) // 2 if factor > 1 else args.kernel_size,
            )
            if args.strides == (2, 2):
                current = dataclasses.replace(current, strides=(1, 1))
                built.append((stage, current))
                current = dataclasses.replace(
                    current,
                    space_to_depth=0,
                    input_filters=input_filters,
                    output_filters=output_filters,
                    kernel_size=args.kernel_size,
                )
            else:
                built.append((stage, current))
                current = dataclasses.replace(current, space_to_depth=2)
        else:
            built.append((stage, current))
        current = dataclasses.replace(current, input_filters=current.output_filters, strides=(1, 1))
        built.extend((stage, current) for _ in range(repeats - 1))

    specs = []
    channels = stem_filters
    for index, (stage, args) in enumerate(built):
        spec = BlockSpec(
            index=index,
            stage=stage,
            input_channels=channels,
            input_filters=args.input_filters,
            output_filters=args.output_filters,
            kernel_size=args.kernel_size,
            strides=args.strides,
            expand_ratio=args.expand_ratio,
            se_filters=_se_filters(args, se_coefficient, use_se),
            conv_type=args.conv_type,
            fused=args.fused,
            space_to_depth_conv=args.space_to_depth == 1,
            space_to_depth_region=args.space_to_depth != 0,
            activation=args.activation or activation,
            id_skip=args.id_skip,
            space_to_batch=args.space_to_batch,
            drop_path_rate=drop_path * index / len(built),
        )
        specs.append(spec)
        channels = spec.output_filters
    return tuple(specs)
