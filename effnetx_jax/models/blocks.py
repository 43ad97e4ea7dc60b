"""The block types, one Flax module each, and `BLOCK_TYPES`, the one place that picks a block's module.

Each type gives only its own convs (`body`); the space-to-depth conv, SE, the projection, the
space-to-batch wrap and the residual are shared (`block_parts.Block`). The model builds, `costs`
counts and `BlockSpec` reads its expanded width and residual from the module `BLOCK_TYPES` gives for
`spec.block_type`, so a new block type is a module here plus the grammar token that selects it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from effnetx_jax.models.block_parts import Block, ConvLayer, expansion

if TYPE_CHECKING:
    from effnetx_jax.models.scaling import BlockSpec


class MBConvBlock(Block):
    """Inverted residual (the reference's MBConvBlock): a 1x1 expansion conv, left out at expand
    ratio 1, then a k x k depthwise conv that carries the stride."""

    @staticmethod
    def body(spec: BlockSpec) -> tuple[ConvLayer, ...]:
        expand = (expansion(spec, "expand", 1),) if spec.expand_ratio != 1 else ()
        width = expand[0].out_channels if expand else spec.body_input_channels
        return (*expand, ConvLayer("depthwise", spec.kernel_size, width, width, spec.strides, depthwise=True))


class FusedMBConvBlock(Block):
    """Fused MBConv (`f1`, EfficientNet-X's early stages): one k x k conv with the stride does the
    expansion and the depthwise conv's work; it is there at expand ratio 1 too."""

    @staticmethod
    def body(spec: BlockSpec) -> tuple[ConvLayer, ...]:
        return (expansion(spec, "fused", spec.kernel_size, spec.strides),)


class ConvBlock(Block):
    """The reference's MBConvBlockWithoutDepthwise (conv type `c1`): a 3x3 expansion conv with the
    stride, left out at expand ratio 1 (where the grammar allows stride 1 only), then the projection.
    The grammar gives it no SE and no space-to-depth."""

    @staticmethod
    def body(spec: BlockSpec) -> tuple[ConvLayer, ...]:
        return (expansion(spec, "expand", 3, spec.strides),) if spec.expand_ratio != 1 else ()

    @staticmethod
    def widths_match(spec: BlockSpec) -> bool:
        # The reference compares the nominal widths here, not the tensors' (they differ after an s2d region).
        return spec.input_filters == spec.output_filters


# Keyed by `BlockSpec.block_type`.
BLOCK_TYPES: dict[str, type[Block]] = {"mbconv": MBConvBlock, "fused": FusedMBConvBlock, "conv": ConvBlock}
