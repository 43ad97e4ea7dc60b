"""Layers shared by the blocks: TF initialisers and padding, backend-aware depthwise, 1x1 and k x k convs, BN,
space-to-batch and drop-path."""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from effnetx_jax import cpu_codegen
from effnetx_jax.errors import UserError

# Reference `conv_kernel_initializer`: N(0, sqrt(2 / fan_out)), fan_out = kh * kw * out_channels.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# Depthwise kernels are stored [kh, kw, 1, C] (Flax's grouped-conv layout); TF's [kh, kw, C, 1]
# has fan_out = kh * kw * 1, so the "output" axis for the fan is the size-1 axis here.
depthwise_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal", in_axis=-1, out_axis=-2)
# Reference `dense_kernel_initializer`: U(-1/sqrt(units), 1/sqrt(units)) with units = outputs.
dense_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_out", "uniform")

ACTIVATION_FNS = {"relu": nn.relu, "swish": nn.swish}
BATCH_NORM_IMPLS = ("auto", "fused", "autodiff")


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME': total padding split with the odd pixel at the end."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def resolve_batch_norm_impl(impl: str) -> str:
    """'auto' picks the fused BatchNorm on CPU only: measured there (docs/models.md), not yet on GPU/TPU,
    where XLA already fuses the autodiff gradient's elementwise passes into its reductions."""
    if impl == "auto":
        return "fused" if jax.default_backend() == "cpu" else "autodiff"
    return impl


def resolve_depthwise_impl(impl: str) -> str:
    """'auto' picks shifted slices on CPU, where XLA's grouped convolution is 5-30x slower."""
    if impl == "auto":
        return "shifted" if jax.default_backend() == "cpu" else "xla"
    return impl


def _xla_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], groups: int = 1) -> jax.Array:
    """XLA's convolution of NHWC `x` with an HWIO kernel, TF SAME padding, `groups` feature groups."""
    pads = [
        same_padding(x.shape[1], kernel.shape[0], strides[0]),
        same_padding(x.shape[2], kernel.shape[1], strides[1]),
    ]
    return lax.conv_general_dilated(
        x, kernel, strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups
    )


def depthwise_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], impl: str) -> jax.Array:
    """Depthwise conv of NHWC `x` with a [kh, kw, 1, C] kernel, TF SAME padding.

    'xla' is a grouped convolution; 'shifted' sums kh*kw strided slices of the padded input times
    per-channel weights. Both read the same kernel, so checkpoints do not depend on the choice.
    """
    if resolve_depthwise_impl(impl) == "xla":
        return _xla_conv(x, kernel, tuple(strides), groups=x.shape[-1])
    return _shifted_depthwise(x, kernel, tuple(strides))


def _phases(x: jax.Array, kh: int, kw: int, strides) -> jax.Array:
    """The TF-SAME-padded `x` split by stride phase: [N, Hp/s0, s0, Wp/s1, s1, C], where phase (a, b)
    ([:, :, a, :, b]) holds padded pixels (h*s0 + a, w*s1 + b). Every tap then reads a unit-stride window of one phase;
    strided slices were 5-7x slower on CPU. With stride 1 this is the padded `x`, reshaped."""
    (s0, s1), (_, h, w, _) = strides, x.shape
    (top, bottom), (left, right) = same_padding(h, kh, s0), same_padding(w, kw, s1)
    # Extra zeros at the end make the padded size a multiple of the stride; no tap reads them.
    bottom += -(h + top + bottom) % s0
    right += -(w + left + right) % s1
    padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    n, hp, wp, c = padded.shape
    return padded.reshape(n, hp // s0, s0, wp // s1, s1, c)


def _tap_origin(phases: jax.Array, i, j) -> tuple:
    """Where kernel tap (i, j)'s window starts in `phases`: (row, row phase, column, column phase).
    `i` and `j` may be Python ints or traced ones (a loop over the taps)."""
    s0, s1 = phases.shape[2], phases.shape[4]
    return i // s0, i % s0, j // s1, j % s1


def _window(phases: jax.Array, i: int, j: int, out_h: int, out_w: int) -> jax.Array:
    """The [N, out_h, out_w, C] window of the padded input that kernel tap (i, j) multiplies."""
    row, row_phase, column, column_phase = _tap_origin(phases, i, j)
    return phases[:, row : row + out_h, row_phase, column : column + out_w, column_phase]


def _sum_of_taps(phases: jax.Array, kernel: jax.Array, out_h: int, out_w: int) -> jax.Array:
    kh, kw = kernel.shape[:2]
    terms = (_window(phases, i, j, out_h, out_w) * kernel[i, j, 0] for i in range(kh) for j in range(kw))
    return functools.reduce(jnp.add, terms)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _shifted_depthwise(x, kernel, strides):
    kh, kw = kernel.shape[:2]
    out_h, out_w = math.ceil(x.shape[1] / strides[0]), math.ceil(x.shape[2] / strides[1])
    return _sum_of_taps(_phases(x, kh, kw, strides), kernel, out_h, out_w)


def _shifted_depthwise_fwd(x, kernel, strides):
    return _shifted_depthwise(x, kernel, strides), (x, kernel)


def _phase_grads(grad_out: jax.Array, kernel: jax.Array, phase_shape) -> jax.Array:
    """Gradient of each phase: phase (a, b) feeds output (y, x) through taps (a + p*s0, b + q*s1) at
    (y + p, x + q), so its gradient is a stride-1 correlation of the output gradient with those taps."""
    kh, kw = kernel.shape[:2]
    _, ph, s0, pw, s1, _ = phase_shape
    taps_h, taps_w = -(-kh // s0), -(-kw // s1)
    out_h, out_w = grad_out.shape[1:3]
    padded = jnp.pad(grad_out, ((0, 0), (taps_h - 1, ph - out_h), (taps_w - 1, pw - out_w), (0, 0)))
    rows = []
    for a in range(s0):
        row = []
        for b in range(s1):
            terms = (
                padded[:, taps_h - 1 - p : taps_h - 1 - p + ph, taps_w - 1 - q : taps_w - 1 - q + pw] * kernel[i, j, 0]
                for p, i in enumerate(range(a, kh, s0))
                for q, j in enumerate(range(b, kw, s1))
            )
            row.append(functools.reduce(jnp.add, terms, jnp.zeros_like(padded[:, :ph, :pw])))
        rows.append(jnp.stack(row, axis=3))
    return jnp.stack(rows, axis=2)


def _kernel_grad(phases: jax.Array, grad_out: jax.Array, kh: int, kw: int) -> jax.Array:
    """Each tap's window times the output gradient, summed. The batch is first summed as a chain of
    adds over (at most 16) slices of it, one parallel elementwise pass per tap, and only then the
    rest in one reduction: XLA:CPU's reductions of a tap to a [C] vector ran 5-20x slower."""
    n, out_h, out_w, c = grad_out.shape
    parts = math.gcd(n, 16)

    def split(a):
        return a.reshape(parts, n // parts, out_h, out_w, c)

    grad_parts = split(grad_out)
    per_tap = []
    for i in range(kh):
        for j in range(kw):
            window = split(_window(phases, i, j, out_h, out_w))
            per_tap.append(functools.reduce(jnp.add, (window[p] * grad_parts[p] for p in range(parts))))
    return jnp.sum(jnp.stack(per_tap), axis=(1, 2, 3)).reshape(kh, kw, 1, c)


def _shifted_depthwise_bwd(strides, residuals, grad_out):
    """Gradients as shifted slices of the phases too. XLA's own transpose of each slice is a
    full-size pad, summed over the k*k taps, which made the backward pass about 4x the forward."""
    x, kernel = residuals
    kh, kw = kernel.shape[:2]
    phases = _phases(x, kh, kw, strides)
    n, ph, s0, pw, s1, c = phases.shape
    grad_padded = _phase_grads(grad_out, kernel, phases.shape).reshape(n, ph * s0, pw * s1, c)
    top, left = same_padding(x.shape[1], kh, s0)[0], same_padding(x.shape[2], kw, s1)[0]
    grad_x = grad_padded[:, top : top + x.shape[1], left : left + x.shape[2]]
    return grad_x, _kernel_grad(phases, grad_out, kh, kw).astype(kernel.dtype)


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


def resolve_conv_kernel_grad() -> str:
    """How a k x k conv's kernel gradient is computed: 'windows' (`_window_kernel_grad`) on a CPU whose
    steps give convolutions to YNNPACK, whose gradient took 3-4x as long (docs/models.md), and XLA's
    ('xla') everywhere else, including XLA:CPU's own convolutions (`cpu_codegen`), faster than the windows."""
    if jax.default_backend() == "cpu" and cpu_codegen.convolution_library() == "ynnpack":
        return "windows"
    return "xla"


def over_pixels(a: jax.Array, b: jax.Array) -> jax.Array:
    """`a.T @ b` of two [pixels, channels] matrices, contracting the pixel axis in place rather than transposing `a`."""
    return lax.dot_general(a, b, (((0,), (0,)), ((), ())))


def _window_kernel_grad(x: jax.Array, grad_out: jax.Array, kernel_shape, strides) -> jax.Array:
    """The kernel gradient as 2-D matmuls over the N*H*W output pixels: each tap's input window
    (transposed) times the output gradient. Where the taps' windows together are no wider than the
    output (a stem on 3 channels), one matmul of all of them (im2col); else one per tap, in a loop so
    that one window at a time is held rather than all k*k."""
    kh, kw, in_channels, out_channels = kernel_shape
    n, out_h, out_w, _ = grad_out.shape
    phases = _phases(x, kh, kw, strides)
    grad_out = grad_out.reshape(-1, out_channels)
    if kh * kw * in_channels <= out_channels:
        windows = [_window(phases, i, j, out_h, out_w) for i in range(kh) for j in range(kw)]
        return over_pixels(jnp.concatenate(windows, axis=-1).reshape(-1, kh * kw * in_channels), grad_out).reshape(
            kernel_shape
        )

    def tap(index, grads):
        start = (0, *_tap_origin(phases, index // kw, index % kw), 0)
        window = lax.dynamic_slice(phases, start, (n, out_h, 1, out_w, 1, in_channels))
        return grads.at[index].set(over_pixels(window.reshape(-1, in_channels), grad_out))

    grads = jnp.zeros((kh * kw, in_channels, out_channels), grad_out.dtype)
    return lax.fori_loop(0, kh * kw, tap, grads).reshape(kernel_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_with_window_kernel_grad(x, kernel, strides):
    return _xla_conv(x, kernel, strides)


def _conv_with_window_kernel_grad_fwd(x, kernel, strides):
    return _xla_conv(x, kernel, strides), (x, kernel)


def _conv_with_window_kernel_grad_bwd(strides, residuals, grad_out):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda x: _xla_conv(x, kernel, strides), x)  # XLA's own: not the slow part
    grad_kernel = _window_kernel_grad(x, grad_out, kernel.shape, strides)
    return input_vjp(grad_out)[0], grad_kernel.astype(kernel.dtype)


_conv_with_window_kernel_grad.defvjp(_conv_with_window_kernel_grad_fwd, _conv_with_window_kernel_grad_bwd)


class Conv(nn.Module):
    """A k x k conv with TF SAME padding: `nn.Conv`'s params, initialiser and forward pass, and where
    `resolve_conv_kernel_grad` picks it, the kernel gradient of `_window_kernel_grad`. Tested equal to
    `nn.Conv` in values and gradients."""

    features: int
    kernel_size: int
    strides: tuple[int, int]
    use_bias: bool
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x):
        shape = (self.kernel_size, self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", conv_kernel_init, shape, jnp.float32)
        x, kernel, strides = x.astype(self.dtype), kernel.astype(self.dtype), tuple(self.strides)
        if resolve_conv_kernel_grad() == "windows":
            y = _conv_with_window_kernel_grad(x, kernel, strides)
        else:
            y = _xla_conv(x, kernel, strides)
        return _with_bias(self, y) if self.use_bias else y


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
        y = _with_bias(self, y) if self.use_bias else y
        return y.reshape(*x.shape[:-1], self.features)


def _with_bias(conv: nn.Module, y: jax.Array) -> jax.Array:
    """`y` plus `conv`'s `bias` parameter (`nn.Conv`'s: float32, zeros at init), in `conv.dtype`."""
    return y + conv.param("bias", nn.initializers.zeros_init(), (conv.features,), jnp.float32).astype(conv.dtype)


def conv(features: int, kernel_size: int, strides=(1, 1), *, dtype, use_bias=False, name=None) -> nn.Module:
    """A TF-style conv: SAME padding (odd pixel at the end, as `flax.linen.Conv`), float32 params.

    1x1 stride-1 convs are `PointwiseConv` matmuls and the others `Conv`, both with `nn.Conv`'s params.
    """
    if kernel_size == 1 and tuple(strides) == (1, 1):
        return PointwiseConv(features, use_bias, dtype, name=name)
    return Conv(features, kernel_size, tuple(strides), use_bias, dtype, name=name)


class BatchNorm(nn.Module):
    """BatchNorm with flax's parameters, numerics and update rule, and optional grouped statistics.

    Training normalises with batch statistics reduced in float32 (E[x^2] - E[x]^2, clipped at 0) and
    updates `batch_stats` as `m = momentum * m + (1 - momentum) * batch`, exactly as `nn.BatchNorm`.
    With `groups` > 1 the batch is split into that many equal contiguous slices, each normalised by
    its own statistics: TF's grouped cross-replica BN (`TpuBatchNormalization`), where each group is
    `bn_group_size` consecutive replicas. TF keeps one moving average per replica and saves replica
    0's; here the update uses the mean of the groups' statistics, the same for every device.

    `activation` ('relu', 'swish' or None) follows the normalisation. `impl` (`BATCH_NORM_IMPLS`) picks
    how training is differentiated: 'autodiff' of the plain form, or 'fused', the same values with the
    gradient of normalisation and activation written out (`_fused_batch_norm`); 'auto' picks per backend.
    """

    use_running_average: bool
    momentum: float
    epsilon: float
    groups: int = 1
    dtype: jnp.dtype = jnp.float32
    activation: str | None = None
    impl: str = "auto"

    @nn.compact
    def __call__(self, x):
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        running_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        if self.use_running_average:
            return self._activate(self._normalize(x, running_mean.value, running_var.value, scale, bias))
        # Grouped: [groups, batch / groups, ..., C], statistics per group. Ungrouped arrays are not
        # reshaped: XLA:CPU runs the 5-D broadcasts noticeably slower (B0 train step +25%).
        grouped = x.reshape(self.groups, -1, *x.shape[1:]) if self.groups > 1 else x
        reduced = tuple(range(1 if self.groups > 1 else 0, grouped.ndim - 1))
        if resolve_batch_norm_impl(self.impl) == "fused":
            out, mean, var = _fused_batch_norm(grouped, scale, bias, reduced, self.epsilon, self.activation, self.dtype)
        else:
            mean, var = self._batch_statistics(grouped, reduced)
            out = self._activate(self._normalize(grouped, mean, var, scale, bias))
        self._update_averages(running_mean, running_var, mean, var)
        return out.reshape(x.shape)

    def _update_averages(self, running_mean, running_var, mean, var):
        if self.is_initializing():
            return
        features = mean.shape[-1]
        new_mean, new_var = mean.reshape(-1, features).mean(0), var.reshape(-1, features).mean(0)
        running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * new_mean
        running_var.value = self.momentum * running_var.value + (1 - self.momentum) * new_var

    def _activate(self, x):
        return x if self.activation is None else ACTIVATION_FNS[self.activation](x)

    def _normalize(self, x, mean, var, scale, bias):
        # The operation order of flax's `_normalize`, in float32 (mean is float32), cast at the end.
        return ((x - mean) * (lax.rsqrt(var + self.epsilon) * scale) + bias).astype(self.dtype)

    @staticmethod
    def _batch_statistics(x: jax.Array, axes: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
        """Mean and variance over `axes` (kept as size-1 dims), in float32 whatever the compute dtype."""
        values = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        mean = values.mean(axes, keepdims=True)
        var = jnp.maximum(0.0, jnp.square(values).mean(axes, keepdims=True) - jnp.square(mean))
        return mean, var


def _activation_and_slope(y: jax.Array, activation: str | None) -> tuple[jax.Array, jax.Array | None]:
    """`activation(y)` and its derivative at `y` (None for the identity)."""
    if activation is None:
        return y, None
    if activation == "relu":
        return jnp.maximum(y, 0), (y > 0).astype(y.dtype)
    gate = jax.nn.sigmoid(y)
    return y * gate, gate * (1 + y * (1 - gate))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def _fused_batch_norm(x, scale, bias, axes, epsilon, activation, dtype):
    """Training BatchNorm and its activation, as `BatchNorm`'s plain path computes them, with the
    gradient written out: (output, batch mean, batch variance), the statistics kept as size-1 dims."""
    return _fused_batch_norm_fwd(x, scale, bias, axes, epsilon, activation, dtype)[0]


def _fused_batch_norm_fwd(x, scale, bias, axes, epsilon, activation, dtype):
    mean, var = BatchNorm._batch_statistics(x, axes)
    rstd = lax.rsqrt(var + epsilon)
    y = (x.astype(mean.dtype) - mean) * (rstd * scale) + bias
    out = _activation_and_slope(y, activation)[0].astype(dtype)
    # Only `x` at full size: the backward pass recomputes the rest from it.
    return (out, mean, var), (x, mean, rstd, scale, bias)


def _fused_batch_norm_bwd(axes, epsilon, activation, dtype, residuals, cotangents):
    """The gradient from `x` and the activation's input gradient alone, in four passes over them (the
    input gradient, two reductions, the result). Autodiff of the plain form also writes and rereads
    the normalised tensor and the activation's input, about 1.5x the time on XLA:CPU."""
    x, mean, rstd, scale, bias = residuals
    # The statistics' cotangents are dropped: they feed only the moving averages, which no loss reads.
    grad_out = cotangents[0].astype(mean.dtype)
    count = math.prod(x.shape[axis] for axis in axes)
    values = x.astype(mean.dtype)
    if activation is not None:
        grad_out = grad_out * _activation_and_slope((values - mean) * (rstd * scale) + bias, activation)[1]
    grad_bias = jnp.sum(grad_out, axes, keepdims=True)
    # sum(grad_out * (x - mean) * rstd), without the normalised tensor
    grad_scale = (jnp.sum(grad_out * values, axes, keepdims=True) - mean * grad_bias) * rstd
    grad_x = (scale * rstd) * (grad_out - grad_bias / count - (values - mean) * (rstd * grad_scale / count))
    return (
        grad_x.astype(x.dtype),
        _sum_to(grad_scale, scale.shape),
        _sum_to(grad_bias, bias.shape),
    )


def _sum_to(per_group: jax.Array, shape) -> jax.Array:
    """A [groups, 1, ..., C] (or [1, ..., C]) parameter gradient summed over the groups, to [C]."""
    return per_group.reshape(-1, shape[-1]).sum(0).reshape(shape)


_fused_batch_norm.defvjp(_fused_batch_norm_fwd, _fused_batch_norm_bwd)


def batch_norm(
    train: bool, momentum: float, epsilon: float, dtype, groups: int = 1, activation=None, impl="auto", name=None
) -> BatchNorm:
    """BatchNorm followed by `activation` (None: none), `impl` one of `BATCH_NORM_IMPLS`."""
    return BatchNorm(
        not train, momentum, epsilon, groups=groups, dtype=dtype, activation=activation, impl=impl, name=name
    )


def space_to_batch(x: jax.Array, block: int) -> jax.Array:
    """[N, H, W, C] -> [N*b*b, H/b, W/b, C]: each image becomes b*b images, one per sub-grid offset.

    Batch index (n*b + i)*b + j holds pixels (h*b + i, w*b + j) of image n, so a k x k conv on it is
    a conv dilated by b on the original grid. TF's `space_to_batch_nd` puts the offset outermost
    ((i*b + j)*N + n); keeping the image outermost instead changes no value (convs act per image and
    BatchNorm sees the same pixels) but keeps every image's sub-grids in its own data shard and
    BatchNorm group, so the rewrite needs no cross-device transpose.
    """
    n, h, w, c = x.shape
    if h % block or w % block:
        raise UserError(f"space_to_batch: block {block} does not divide the {h}x{w} feature map")
    x = x.reshape(n, h // block, block, w // block, block, c)
    x = x.transpose(0, 2, 4, 1, 3, 5)
    return x.reshape(n * block * block, h // block, w // block, c)


def batch_to_space(x: jax.Array, block: int) -> jax.Array:
    """The inverse of `space_to_batch`."""
    bn, h, w, c = x.shape
    n = bn // (block * block)
    x = x.reshape(n, block, block, h, w, c)
    x = x.transpose(0, 3, 1, 4, 2, 5)
    return x.reshape(n, h * block, w * block, c)


def drop_path(x: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
    """Per-sample stochastic depth as the reference's `drop_connect`: x / keep * floor(keep + U)."""
    keep = 1.0 - rate
    mask = jnp.floor(keep + jax.random.uniform(rng, (x.shape[0],) + (1,) * (x.ndim - 1), dtype=jnp.float32))
    return x / jnp.asarray(keep, x.dtype) * mask.astype(x.dtype)
