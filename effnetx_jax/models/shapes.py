"""Feature-map sizes through an architecture (TF SAME convs: out = ceil(in / stride))."""

from __future__ import annotations

import math

from effnetx_jax.models.scaling import Architecture, BlockSpec

STEM_STRIDE = 2


def _reduce(size: int, stride: int) -> int:
    return math.ceil(size / stride)


def strided(size: tuple[int, int], strides: tuple[int, int]) -> tuple[int, int]:
    """(height, width) after a SAME conv with `strides`."""
    return _reduce(size[0], strides[0]), _reduce(size[1], strides[1])


def body_size(spec: BlockSpec, height: int, width: int) -> tuple[int, int]:
    """Size after the optional s2d conv, where the block's own convs start."""
    if spec.space_to_depth_conv:
        return _reduce(height, 2), _reduce(width, 2)
    return height, width


def output_size(spec: BlockSpec, height: int, width: int) -> tuple[int, int]:
    return strided(body_size(spec, height, width), spec.strides)


def stem_output_size(resolution: int) -> tuple[int, int]:
    return (_reduce(resolution, STEM_STRIDE),) * 2


def block_input_sizes(arch: Architecture, resolution: int) -> list[tuple[int, int]]:
    """(height, width) of the input of every block for a square image of `resolution`."""
    size = stem_output_size(resolution)
    sizes = []
    for spec in arch.blocks:
        sizes.append(size)
        size = output_size(spec, *size)
    return sizes


def final_size(arch: Architecture, resolution: int) -> tuple[int, int]:
    size = stem_output_size(resolution)
    for spec in arch.blocks:
        size = output_size(spec, *size)
    return size


def space_to_batch_fits(spec: BlockSpec, height: int, width: int) -> bool:
    """Space-to-batch wraps the whole block, so input and output must both tile by the block size."""
    size = spec.space_to_batch
    out_h, out_w = output_size(spec, height, width)
    return not (height % size or width % size or out_h % size or out_w % size)
