"""Analytic cost of an architecture: multiply-accumulates (MACs) and memory traffic, layer by layer.

A block's layers are the ones its module builds, as its block type describes them
(`block_parts.Block.describe`); nothing here depends on the block type.

MACs (the reference's and the EfficientNet paper's rule): every conv, depthwise conv and dense layer
contributes output pixels x kernel area x input channels (per group) x output channels. SE's two
1x1 convs count (on a 1x1 map); BatchNorm, activations, pooling, the SE gate and residual adds do
not. Space-to-batch leaves the conv MACs unchanged (same pixels) but runs SE once per sub-image.

Bytes moved (the roofline model's rule, as in the paper's operational-intensity analysis): each
conv, depthwise conv and dense layer reads its input activation and its weights once and writes its
output activation once, at the compute dtype; SE reads the map it pools. BatchNorm, activations,
the SE gate and residual adds are taken as fused into those layers (no traffic of their own).
Activations scale with the batch, weights are read once per batch. Operational intensity is
FLOPs (2 x MACs) per byte moved: below the device's FLOPs/bandwidth ridge a layer is memory-bound.

Parameters: the weights (and the SE and classifier biases) plus a scale and a bias per channel of the
BatchNorm after every conv except SE's and the classifier, as the Flax model holds them, counted
without building it (the config check's bound on model size).
"""

from __future__ import annotations

import dataclasses

from effnetx_jax.models import shapes
from effnetx_jax.models.block_parts import SqueezeExciteLayer
from effnetx_jax.models.blocks import BLOCK_TYPES
from effnetx_jax.models.scaling import Architecture, BlockSpec


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """One layer at batch 1: MACs, activation elements read and written, weight elements read, and the
    channels of the BatchNorm that follows it (0: none)."""

    name: str
    macs: int
    activations: int
    weights: int
    batch_norm_channels: int = 0

    @property
    def parameters(self) -> int:
        """Trainable parameters: the weights, and BatchNorm's scale and bias per channel."""
        return self.weights + 2 * self.batch_norm_channels


@dataclasses.dataclass(frozen=True)
class BlockCost:
    spec: BlockSpec
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    layers: tuple[LayerCost, ...]

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)


def _pixels(size: tuple[int, int]) -> int:
    return size[0] * size[1]


def _conv(
    name, size_in, size_out, kernel: int, channels_in: int, channels_out: int, groups: int = 1, batch_norm=True
) -> LayerCost:
    per_group_in = channels_in // groups
    return LayerCost(
        name,
        macs=_pixels(size_out) * kernel * kernel * per_group_in * channels_out,
        activations=_pixels(size_in) * channels_in + _pixels(size_out) * channels_out,
        weights=kernel * kernel * per_group_in * channels_out,
        batch_norm_channels=channels_out if batch_norm else 0,
    )


def _squeeze_excite(layer: SqueezeExciteLayer, size: tuple[int, int], sub_images: int) -> LayerCost:
    """SE pools the map it gates (once per space-to-batch sub-image) through two 1x1 convs with biases."""
    channels, reduced = layer.channels, layer.reduced_channels
    weights = 2 * channels * reduced + channels + reduced
    return LayerCost(layer.name, 2 * channels * reduced * sub_images, _pixels(size) * channels, weights)


def block_layers(spec: BlockSpec, input_size: tuple[int, int]) -> tuple[LayerCost, ...]:
    """The cost of every layer the block's module builds (`block_parts.Block.describe`), in call order."""
    sub_images = max(1, spec.space_to_batch) ** 2
    size, layers = input_size, []
    for layer in BLOCK_TYPES[spec.block_type].describe(spec):
        if isinstance(layer, SqueezeExciteLayer):
            layers.append(_squeeze_excite(layer, size, sub_images))
            continue
        output = shapes.strided(size, layer.strides)
        layers.append(
            _conv(layer.name, size, output, layer.kernel, layer.in_channels, layer.out_channels, layer.groups)
        )
        size = output
    return tuple(layers)


def block_costs(arch: Architecture, resolution: int | None = None) -> list[BlockCost]:
    resolution = resolution or arch.resolution
    return [
        BlockCost(spec, size, shapes.output_size(spec, *size), block_layers(spec, size))
        for spec, size in zip(arch.blocks, shapes.block_input_sizes(arch, resolution), strict=True)
    ]


def stem_layers(arch: Architecture, resolution: int) -> tuple[LayerCost, ...]:
    image = (resolution, resolution)
    return (_conv("stem_conv", image, shapes.stem_output_size(resolution), 3, 3, arch.stem_filters),)


def head_layers(arch: Architecture, resolution: int) -> tuple[LayerCost, ...]:
    final = shapes.final_size(arch, resolution)
    conv = _conv("head_conv", final, final, 1, arch.blocks[-1].output_filters, arch.head_filters)
    classifier = _conv("classifier", (1, 1), (1, 1), 1, arch.head_filters, arch.num_classes, batch_norm=False)
    # The classifier has a bias; its pooled input is read from the head conv's output.
    return conv, dataclasses.replace(classifier, weights=classifier.weights + arch.num_classes)


def stem_macs(arch: Architecture, resolution: int) -> int:
    return sum(layer.macs for layer in stem_layers(arch, resolution))


def head_macs(arch: Architecture, resolution: int) -> int:
    return sum(layer.macs for layer in head_layers(arch, resolution))


def all_layers(arch: Architecture, resolution: int | None = None) -> list[LayerCost]:
    resolution = resolution or arch.resolution
    blocks = [layer for cost in block_costs(arch, resolution) for layer in cost.layers]
    return [*stem_layers(arch, resolution), *blocks, *head_layers(arch, resolution)]


def total_macs(arch: Architecture, resolution: int | None = None) -> int:
    return sum(layer.macs for layer in all_layers(arch, resolution))


def parameter_count(arch: Architecture) -> int:
    """Trainable parameters of `arch`, from its layer shapes alone (nothing is traced or allocated)."""
    return sum(layer.parameters for layer in all_layers(arch))


def bytes_moved(layers, batch: int, dtype_bytes: int) -> int:
    """Memory traffic of `layers` for one batch: activations per image, weights once."""
    return dtype_bytes * sum(batch * layer.activations + layer.weights for layer in layers)


def flops(layers, batch: int) -> int:
    """Floating-point operations of `layers` for one batch: 2 x MACs per image x batch."""
    return 2 * batch * sum(layer.macs for layer in layers)


def intensity(layers, batch: int, dtype_bytes: int) -> float:
    """Operational intensity: FLOPs per byte moved."""
    return flops(layers, batch) / bytes_moved(layers, batch, dtype_bytes)
