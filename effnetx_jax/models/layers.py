"""Layers shared by the blocks: TF initialisers and padding, a backend-aware depthwise conv, BN,
space-to-batch and drop-path."""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# Reference `conv_kernel_initializer`: N(0, sqrt(2 / fan_out)), fan_out = kh * kw * out_channels.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# Depthwise kernels are stored [kh, kw, 1, C] (Flax's grouped-conv layout); TF's [kh, kw, C, 1]
# has fan_out = kh * kw * 1, so the "output" axis for the fan is the size-1 axis here.
depthwise_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal", in_axis=-1, out_axis=-2)
# Reference `dense_kernel_initializer`: U(-1/sqrt(units), 1/sqrt(units)) with units = outputs.
dense_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_out", "uniform")

ACTIVATION_FNS = {"relu": nn.relu, "swish": nn.swish}


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME': total padding split with the odd pixel at the end."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def resolve_depthwise_impl(impl: str) -> str:
    """'auto' picks shifted slices on CPU, where XLA's grouped convolution is 5-30x slower."""
    if impl == "auto":
        return "shifted" if jax.default_backend() == "cpu" else "xla"
    return impl


def depthwise_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], impl: str) -> jax.Array:
    """Depthwise conv of NHWC `x` with a [kh, kw, 1, C] kernel, TF SAME padding.

    'xla' is a grouped convolution; 'shifted' sums kh*kw strided slices of the padded input times
    per-channel weights. Both read the same kernel, so checkpoints do not depend on the choice.
    """
    kh, kw = kernel.shape[:2]
    pads = (same_padding(x.shape[1], kh, strides[0]), same_padding(x.shape[2], kw, strides[1]))
    if resolve_depthwise_impl(impl) == "xla":
        return lax.conv_general_dilated(
            x,
            kernel,
            window_strides=strides,
            padding=pads,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=x.shape[-1],
        )
    return _shifted_depthwise(x, kernel, tuple(strides))


def _taps(padded: jax.Array, kh: int, kw: int, strides, out_h: int, out_w: int):
    """Yields (i, j, window): the strided window of `padded` that kernel tap (i, j) multiplies."""
    n, _, _, c = padded.shape
    for i in range(kh):
        for j in range(kw):
            end = (n, i + (out_h - 1) * strides[0] + 1, j + (out_w - 1) * strides[1] + 1, c)
            yield i, j, lax.slice(padded, (0, i, j, 0), end, (1, strides[0], strides[1], 1))


def _sum_of_taps(padded: jax.Array, kernel: jax.Array, strides, out_h: int, out_w: int) -> jax.Array:
    kh, kw = kernel.shape[:2]
    terms = (window * kernel[i, j, 0] for i, j, window in _taps(padded, kh, kw, strides, out_h, out_w))
    return functools.reduce(jnp.add, terms)


def _pad_same(x: jax.Array, kh: int, kw: int, strides) -> jax.Array:
    pads = (same_padding(x.shape[1], kh, strides[0]), same_padding(x.shape[2], kw, strides[1]))
    return jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _shifted_depthwise(x, kernel, strides):
    kh, kw = kernel.shape[:2]
    out_h, out_w = math.ceil(x.shape[1] / strides[0]), math.ceil(x.shape[2] / strides[1])
    return _sum_of_taps(_pad_same(x, kh, kw, strides), kernel, strides, out_h, out_w)


def _shifted_depthwise_fwd(x, kernel, strides):
    return _shifted_depthwise(x, kernel, strides), (x, kernel)


def _shifted_depthwise_bwd(strides, residuals, grad_out):
    """Gradients as shifted slices too. XLA's own transpose of each slice is a full-size pad, summed
    over the k*k taps, which made the backward pass about 4x the forward on CPU."""
    x, kernel = residuals
    kh, kw = kernel.shape[:2]
    out_h, out_w = grad_out.shape[1:3]
    # Input gradient: a stride-1 correlation of the output gradient, zero-dilated by the stride and
    # padded so that it lines up with the input, with the kernel flipped.
    spatial = []
    for axis, k, stride, out in ((1, kh, strides[0], out_h), (2, kw, strides[1], out_w)):
        low = k - 1 - same_padding(x.shape[axis], k, stride)[0]
        spatial.append((low, x.shape[axis] + k - 1 - low - ((out - 1) * stride + 1), stride - 1))
    dilated = lax.pad(grad_out, jnp.zeros((), grad_out.dtype), [(0, 0, 0), *spatial, (0, 0, 0)])
    grad_x = _sum_of_taps(dilated, kernel[::-1, ::-1], (1, 1), x.shape[1], x.shape[2])
    # Kernel gradient: each tap's window of the padded input times the output gradient, summed.
    padded = _pad_same(x, kh, kw, strides)
    grad_taps = [
        jnp.sum(window * grad_out, axis=(0, 1, 2)) for _, _, window in _taps(padded, kh, kw, strides, out_h, out_w)
    ]
    grad_kernel = jnp.stack(grad_taps).reshape(kh, kw, 1, -1).astype(kernel.dtype)
    return grad_x, grad_kernel


_shifted_depthwise.defvjp(_shifted_depthwise_fwd, _shifted_depthwise_bwd)


class DepthwiseConv(nn.Module):
    kernel_size: int
    strides: tuple[int, int]
    impl: str = "auto"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kernel = self.param(
            "kernel", depthwise_kernel_init, (self.kernel_size, self.kernel_size, 1, x.shape[-1]), jnp.float32
        )
        return depthwise_conv(x.astype(self.dtype), kernel.astype(self.dtype), self.strides, self.impl)


class PointwiseConv(nn.Module):
    """A 1x1 stride-1 conv as a matmul over the channel axis of the [N*H*W, C] pixels.

    Same params (`kernel` [1, 1, in, out], optional `bias`) and initialisers as `nn.Conv`, so
    checkpoints do not depend on it. Its gradients are matmuls too, where XLA:CPU's conv transposes
    of a 1x1 conv cost about 4x the forward.
    """

    features: int
    use_bias: bool
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", conv_kernel_init, (1, 1, x.shape[-1], self.features), jnp.float32)
        # The 2-D matmul: a dot over [N, H, W, C] is a batched one and 2-6x slower to differentiate.
        y = jnp.dot(x.reshape(-1, x.shape[-1]).astype(self.dtype), kernel[0, 0].astype(self.dtype))
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32).astype(self.dtype)
        return y.reshape(*x.shape[:-1], self.features)


def conv(features: int, kernel_size: int, strides=(1, 1), *, dtype, use_bias=False, name=None) -> nn.Module:
    """A TF-style conv: SAME padding (odd pixel at the end, as `flax.linen.Conv`), float32 params.

    1x1 stride-1 convs are `PointwiseConv` matmuls, with the same params as the `nn.Conv` otherwise used.
    """
    if kernel_size == 1 and tuple(strides) == (1, 1):
        return PointwiseConv(features, use_bias, dtype, name=name)
    return nn.Conv(
        features,
        (kernel_size, kernel_size),
        strides=tuple(strides),
        padding="SAME",
        use_bias=use_bias,
        kernel_init=conv_kernel_init,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


def batch_norm(train: bool, momentum: float, epsilon: float, dtype, name=None) -> nn.BatchNorm:
    """BN with statistics reduced in float32 whatever the compute dtype (flax's default)."""
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=momentum,
        epsilon=epsilon,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


def space_to_batch(x: jax.Array, block: int) -> jax.Array:
    """[N, H, W, C] -> [b*b*N, H/b, W/b, C] with TF `space_to_batch_nd` ordering.

    Output batch index (i*b + j)*N + n holds pixels (h*b + i, w*b + j) of image n: each new image is
    the sub-grid at one offset, so a k x k conv on it is a conv dilated by b on the original grid.
    """
    n, h, w, c = x.shape
    if h % block or w % block:
        raise ValueError(f"space_to_batch: block {block} does not divide the {h}x{w} feature map")
    x = x.reshape(n, h // block, block, w // block, block, c)
    x = x.transpose(2, 4, 0, 1, 3, 5)
    return x.reshape(block * block * n, h // block, w // block, c)


def batch_to_space(x: jax.Array, block: int) -> jax.Array:
    """The inverse of `space_to_batch`."""
    bn, h, w, c = x.shape
    n = bn // (block * block)
    x = x.reshape(block, block, n, h, w, c)
    x = x.transpose(2, 3, 0, 4, 1, 5)
    return x.reshape(n, h * block, w * block, c)


def drop_path(x: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
    """Per-sample stochastic depth as the reference's `drop_connect`: x / keep * floor(keep + U)."""
    keep = 1.0 - rate
    mask = jnp.floor(keep + jax.random.uniform(rng, (x.shape[0],) + (1,) * (x.ndim - 1), dtype=jnp.float32))
    return x / jnp.asarray(keep, x.dtype) * mask.astype(x.dtype)
