"""What every block type shares: the description of its layers, the SE gate, the gated projection and
the `Block` module that wraps a block type's own convs.

A block type (`models/blocks.py`) declares its layers from the `BlockSpec` as data (`ConvLayer`,
`SqueezeExciteLayer`); `Block` builds exactly those, in that order, and `models/costs.py` counts
the same list, so the model and its analytic cost cannot disagree. Every type shares the order
[space-to-depth conv] -> the type's body -> [SE] -> 1x1 projection, the space-to-batch wrap and the
residual with drop-path. Submodule names are those of checkpoints already written (and map onto the
reference's layers): `space2depth_conv`/`_bn`, `<body layer>_conv`/`_bn`, `depthwise`/`depthwise_bn`,
`se/reduce`, `se/expand`, `project_conv`/`_bn`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from effnetx_jax.models import layers

if TYPE_CHECKING:
    from effnetx_jax.models.scaling import BlockSpec


@dataclasses.dataclass(frozen=True)
class ConvLayer:
    """A conv, then BatchNorm, then the block's activation unless `activation` is False."""

    name: str
    kernel: int
    in_channels: int
    out_channels: int
    strides: tuple[int, int] = (1, 1)
    depthwise: bool = False
    activation: bool = True

    @property
    def groups(self) -> int:
        return self.in_channels if self.depthwise else 1

    @property
    def conv_name(self) -> str:
        # The depthwise kernel's module is `depthwise`, every other conv's `<name>_conv`.
        return self.name if self.depthwise else f"{self.name}_conv"

    @property
    def bn_name(self) -> str:
        return f"{self.name}_bn"


@dataclasses.dataclass(frozen=True)
class SqueezeExciteLayer:
    """The SE gate of `channels`, squeezed to `reduced_channels`; the layer after it (the projection) applies it."""

    channels: int
    reduced_channels: int
    name: str = "se"


def expansion(spec: BlockSpec, name: str, kernel: int, strides=(1, 1)) -> ConvLayer:
    """The conv that widens what arrives to the nominal input width x the expand ratio (the reference's
    expanded width is of `input_filters`, not of the tensor that arrives; see `BlockSpec`)."""
    return ConvLayer(name, kernel, spec.body_input_channels, spec.input_filters * spec.expand_ratio, strides)


def space_to_depth_layers(spec: BlockSpec) -> tuple[ConvLayer, ...]:
    """The learned 2x2/s2 conv that starts a space-to-depth region, to `input_filters` (already x4)."""
    if not spec.space_to_depth_conv:
        return ()
    return (ConvLayer("space2depth", 2, spec.input_channels, spec.input_filters, (2, 2)),)


def squeeze_excite_layers(spec: BlockSpec, channels: int) -> tuple[SqueezeExciteLayer, ...]:
    return (SqueezeExciteLayer(channels, spec.se_filters),) if spec.se_filters else ()


def projection(spec: BlockSpec, channels: int) -> ConvLayer:
    """The 1x1 conv to the block's output width: BatchNorm, no activation."""
    return ConvLayer("project", 1, channels, spec.output_filters, activation=False)


class SqueezeExcite(nn.Module):
    """The SE gate: mean over H, W -> 1x1 conv (bias) -> block activation -> 1x1 conv (bias) -> sigmoid.

    Returns the [N, 1, 1, C] gate rather than the gated tensor: `GatedProjection` applies it.
    """

    reduced_filters: int
    activation: str
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x):
        squeezed = jnp.mean(x, axis=(1, 2), keepdims=True)
        squeezed = layers.conv(self.reduced_filters, 1, dtype=self.dtype, use_bias=True, name="reduce")(squeezed)
        squeezed = layers.ACTIVATION_FNS[self.activation](squeezed)
        squeezed = layers.conv(x.shape[-1], 1, dtype=self.dtype, use_bias=True, name="expand")(squeezed)
        return nn.sigmoid(squeezed)


class GatedProjection(nn.Module):
    """The 1x1 projection of a gated tensor, `conv1x1(x * gate)`, computed as `x @ (gate * W)` on
    maps with more pixels than channels, and as the plain product of the gated activations elsewhere.

    Scaling the [C, out] weights per sample instead of the [H, W, C] activations saves a pass over the
    block's widest tensor. Autodiff of it gives per-sample [C, H*W] x [H*W, out] products summed over
    the batch, which XLA:CPU runs slowly when H*W is not well above C; on CPU the gradient is written
    out as 2-D matmuls instead (`_per_sample_projection`). Measured on the B0 train step at batch 16
    (docs/models.md): this rule 1.07x the rule it replaced (per-sample weights wherever the map had
    more pixels than outputs, so also on B0's 14x14 maps), inference unchanged (1.01x).
    Same kernel (name, shape, initialiser) as the plain 1x1 conv, so checkpoints do not depend on it.
    """

    features: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x, gate):
        kernel = self.param("kernel", layers.conv_kernel_init, (1, 1, x.shape[-1], self.features), jnp.float32)
        x, kernel = x.astype(self.dtype), kernel[0, 0].astype(self.dtype)
        if x.shape[1] * x.shape[2] <= x.shape[-1]:
            gated = (x * gate).reshape(-1, x.shape[-1])
            return jnp.dot(gated, kernel).reshape(*x.shape[:-1], self.features)
        if resolve_projection_grad() == "matmuls":
            return _per_sample_projection(x, gate, kernel)
        return _scaled_weights_product(x, gate, kernel)


def resolve_projection_grad() -> str:
    """How the per-sample-weights projection is differentiated: 'matmuls' (`_per_sample_projection`)
    on CPU, where it was measured faster, and autodiff ('xla') on every other backend, where it was not
    measured."""
    return "matmuls" if jax.default_backend() == "cpu" else "xla"


def _scaled_weights_product(x, gate, kernel):
    """`conv1x1(x * gate)` as `x` times each sample's gate-scaled [C, out] weights."""
    return jnp.einsum("nhwc,ncd->nhwd", x, gate[:, 0, 0, :, None] * kernel)


@jax.custom_vjp
def _per_sample_projection(x, gate, kernel):
    """`_scaled_weights_product` with its gradient as 2-D matmuls over the N*H*W pixels, which on the
    B0 train step ran 1.05x autodiff's per-sample products (docs/models.md)."""
    return _scaled_weights_product(x, gate, kernel)


def _per_sample_projection_fwd(x, gate, kernel):
    return _scaled_weights_product(x, gate, kernel), (x, gate, kernel)


def _per_sample_projection_bwd(residuals, grad_out):
    x, gate, kernel = residuals
    channels, features = kernel.shape
    grad_out = grad_out.reshape(-1, features)
    grad_gated = jnp.dot(grad_out, kernel.T).reshape(x.shape)  # the gradient of x * gate
    grad_kernel = layers.over_pixels((x * gate).reshape(-1, channels), grad_out)
    return grad_gated * gate, jnp.sum(grad_gated * x, axis=(1, 2), keepdims=True), grad_kernel


_per_sample_projection.defvjp(_per_sample_projection_fwd, _per_sample_projection_bwd)


class Block(nn.Module):
    """One block: the layers `describe(spec)` lists, inside the space-to-batch wrap, plus the residual.

    A block type subclasses it and gives `body(spec)`, its convs between the space-to-depth conv and
    SE; a type whose residual rule differs overrides `widths_match`.
    """

    spec: BlockSpec
    bn_momentum: float
    bn_epsilon: float
    depthwise_impl: str
    dtype: jnp.dtype
    bn_groups: int = 1
    batch_norm_impl: str = "auto"

    @staticmethod
    def body(spec: BlockSpec) -> tuple[ConvLayer, ...]:
        raise NotImplementedError("a block type gives its own convs")

    @classmethod
    def expanded_filters(cls, spec: BlockSpec) -> int:
        """The width the body hands to SE and the projection (what arrives if the body has no conv)."""
        body = cls.body(spec)
        return body[-1].out_channels if body else spec.body_input_channels

    @classmethod
    def describe(cls, spec: BlockSpec) -> tuple[ConvLayer | SqueezeExciteLayer, ...]:
        """Every layer of the block in call order: what the module builds and what `costs` counts."""
        width = cls.expanded_filters(spec)
        return (
            *space_to_depth_layers(spec),
            *cls.body(spec),
            *squeeze_excite_layers(spec, width),
            projection(spec, width),
        )

    @staticmethod
    def widths_match(spec: BlockSpec) -> bool:
        """The reference's MBConv checks the real tensors: the width that arrives against the output."""
        return spec.input_channels == spec.output_filters

    @classmethod
    def has_residual(cls, spec: BlockSpec) -> bool:
        """The input is added when strides are 1 and the widths match. A block starting with the s2d
        conv halves the spatial size, so it never has one."""
        if not spec.id_skip or spec.strides != (1, 1) or spec.space_to_depth_conv:
            return False
        return cls.widths_match(spec)

    def _conv_bn(self, layer: ConvLayer, x, train: bool, gate=None):
        name = layer.conv_name
        if layer.depthwise:
            x = layers.DepthwiseConv(layer.kernel, layer.strides, self.depthwise_impl, self.dtype, name=name)(x)
        elif gate is not None:
            x = GatedProjection(layer.out_channels, self.dtype, name=name)(x, gate)
        else:
            x = layers.conv(layer.out_channels, layer.kernel, layer.strides, dtype=self.dtype, name=name)(x)
        activation = self.spec.activation if layer.activation else None
        bn = layers.batch_norm(
            train,
            self.bn_momentum,
            self.bn_epsilon,
            self.dtype,
            self.bn_groups,
            activation,
            self.batch_norm_impl,
            name=layer.bn_name,
        )
        return bn(x)

    def _layers(self, x, train: bool):
        gate = None
        for layer in self.describe(self.spec):
            if isinstance(layer, SqueezeExciteLayer):
                gate = SqueezeExcite(layer.reduced_channels, self.spec.activation, self.dtype, name=layer.name)(x)
            else:
                # The gate is taken by the next conv, the projection, without materialising x * gate.
                x, gate = self._conv_bn(layer, x, train, gate), None
        return x

    @nn.compact
    def __call__(self, inputs, train: bool):
        spec = self.spec
        if spec.space_to_batch:
            x = layers.space_to_batch(inputs, spec.space_to_batch)
            x = layers.batch_to_space(self._layers(x, train), spec.space_to_batch)
        else:
            x = self._layers(inputs, train)
        if not self.has_residual(spec):
            return x
        if train and spec.drop_path_rate > 0:
            x = layers.drop_path(x, spec.drop_path_rate, self.make_rng("dropout"))
        return x + inputs
