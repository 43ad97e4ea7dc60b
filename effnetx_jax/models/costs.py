"""Analytic cost of an architecture: multiply-accumulates (MACs) per block at batch 1.

Counting rule (the reference's and the EfficientNet paper's): every conv, depthwise conv and dense
layer contributes output pixels x kernel area x input channels (per group) x output channels. SE's
two 1x1 convs count (on a 1x1 map); BatchNorm, activations, pooling, the SE gate and residual adds do
not. Space-to-batch leaves the conv MACs unchanged (same pixels) but runs SE once per sub-image.
"""

from __future__ import annotations

import dataclasses

from effnetx_jax.models import shapes
from effnetx_jax.models.scaling import Architecture, BlockSpec


@dataclasses.dataclass(frozen=True)
class BlockCost:
    spec: BlockSpec
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    macs: int


def _conv_macs(size: tuple[int, int], kernel: int, channels_in: int, channels_out: int) -> int:
    return size[0] * size[1] * kernel * kernel * channels_in * channels_out


def block_macs(spec: BlockSpec, input_size: tuple[int, int]) -> int:
    body = shapes.body_size(spec, *input_size)
    out = shapes.output_size(spec, *input_size)
    expanded = spec.expanded_filters
    macs = 0
    if spec.space_to_depth_conv:
        macs += _conv_macs(body, 2, spec.input_channels, spec.input_filters)
    if spec.conv_type == 1:
        if spec.expand_ratio != 1:
            macs += _conv_macs(out, 3, spec.body_input_channels, expanded)
    elif spec.fused:
        macs += _conv_macs(out, spec.kernel_size, spec.body_input_channels, expanded)
    else:
        if spec.expand_ratio != 1:
            macs += _conv_macs(body, 1, spec.body_input_channels, expanded)
        macs += _conv_macs(out, spec.kernel_size, 1, expanded)
    if spec.se_filters:
        macs += 2 * expanded * spec.se_filters * max(1, spec.space_to_batch) ** 2
    macs += _conv_macs(out, 1, expanded, spec.output_filters)
    return macs


def block_costs(arch: Architecture, resolution: int | None = None) -> list[BlockCost]:
    resolution = resolution or arch.resolution
    costs = []
    for spec, size in zip(arch.blocks, shapes.block_input_sizes(arch, resolution), strict=True):
        costs.append(BlockCost(spec, size, shapes.output_size(spec, *size), block_macs(spec, size)))
    return costs


def stem_macs(arch: Architecture, resolution: int) -> int:
    return _conv_macs(shapes.stem_output_size(resolution), 3, 3, arch.stem_filters)


def head_macs(arch: Architecture, resolution: int) -> int:
    channels = arch.blocks[-1].output_filters
    conv = _conv_macs(shapes.final_size(arch, resolution), 1, channels, arch.head_filters)
    return conv + arch.head_filters * arch.num_classes


def total_macs(arch: Architecture, resolution: int | None = None) -> int:
    resolution = resolution or arch.resolution
    blocks = sum(cost.macs for cost in block_costs(arch, resolution))
    return stem_macs(arch, resolution) + blocks + head_macs(arch, resolution)
