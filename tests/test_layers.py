import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from effnetx_jax.models import layers


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "batch"),
    # Batch 20: the kernel gradient sums it in 4 slices of 5 images.
    [(9, 3, 1, 2), (9, 3, 2, 2), (8, 2, 1, 2), (8, 5, 2, 2), (7, 5, 1, 2), (6, 2, 2, 2), (9, 3, 2, 20)],
)
def test_depthwise_implementations_agree_in_values_and_gradients(size, kernel, stride, batch):
    key_x, key_k, key_g = jax.random.split(jax.random.key(size * kernel + stride), 3)
    x = jax.random.normal(key_x, (batch, size, size + 1, 6))
    w = jax.random.normal(key_k, (kernel, kernel, 1, 6))

    def loss(impl):
        def fn(x, w):
            out = layers.depthwise_conv(x, w, (stride, stride), impl)
            return jnp.sum(out * jax.random.normal(key_g, out.shape))

        return fn

    xla_value, xla_grads = jax.jit(jax.value_and_grad(loss("xla"), argnums=(0, 1)))(x, w)
    shifted_value, shifted_grads = jax.jit(jax.value_and_grad(loss("shifted"), argnums=(0, 1)))(x, w)
    np.testing.assert_allclose(shifted_value, xla_value, rtol=1e-5)
    for shifted, xla in zip(shifted_grads, xla_grads, strict=True):
        np.testing.assert_allclose(shifted, xla, rtol=1e-4, atol=1e-4)


def test_auto_depthwise_picks_shifted_slices_on_cpu():
    assert layers.resolve_depthwise_impl("auto") == ("shifted" if jax.default_backend() == "cpu" else "xla")
    assert layers.resolve_depthwise_impl("xla") == "xla"


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "pads"),
    [(224, 3, 2, (0, 1)), (112, 2, 1, (0, 1)), (56, 5, 1, (2, 2)), (7, 3, 1, (1, 1))],
)
def test_tf_same_padding(size, kernel, stride, pads):
    assert layers.same_padding(size, kernel, stride) == pads


def test_space_to_batch_is_an_exact_inverse_pair():
    x = jax.random.normal(jax.random.key(0), (3, 8, 12, 5))
    y = layers.space_to_batch(x, 2)
    assert y.shape == (12, 4, 6, 5)
    np.testing.assert_array_equal(layers.batch_to_space(y, 2), x)
    np.testing.assert_array_equal(layers.space_to_batch(layers.batch_to_space(y, 2), 2), y)
    # Image outermost: batch (n*b + i)*b + j holds pixels (h*b + i, w*b + j) of image n.
    np.testing.assert_array_equal(y[(2 * 2 + 1) * 2 + 0], x[2, 1::2, 0::2])


def test_conv_after_space_to_batch_is_a_dilated_conv():
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 4))
    w = jax.random.normal(jax.random.key(2), (3, 3, 1, 4))
    via_batch = layers.batch_to_space(layers.depthwise_conv(layers.space_to_batch(x, 2), w, (1, 1), "xla"), 2)
    dilated = lax.conv_general_dilated(
        x,
        w,
        (1, 1),
        ((2, 2), (2, 2)),
        rhs_dilation=(2, 2),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=4,
    )
    np.testing.assert_allclose(via_batch, dilated, rtol=1e-5, atol=1e-5)


def test_space_to_batch_rejects_indivisible_maps():
    with pytest.raises(ValueError, match="does not divide the 7x7"):
        layers.space_to_batch(jnp.zeros((1, 7, 7, 2)), 2)


def test_drop_path_keeps_the_expected_fraction_and_scale():
    x = jnp.ones((20_000, 2, 2, 3))
    out = layers.drop_path(x, 0.3, jax.random.key(0))
    per_sample = out[:, 0, 0, 0]
    kept = per_sample > 0
    assert abs(float(kept.mean()) - 0.7) < 0.01
    np.testing.assert_allclose(per_sample[kept], 1 / 0.7, rtol=1e-6)
    # Whole samples are kept or dropped.
    assert bool(jnp.all((out == 0).all(axis=(1, 2, 3)) | (out > 0).all(axis=(1, 2, 3))))


def test_initialisers_follow_the_reference():
    key = jax.random.key(0)
    conv = layers.conv_kernel_init(key, (3, 3, 64, 128))
    assert float(conv.std()) == pytest.approx((2 / (3 * 3 * 128)) ** 0.5, rel=0.02)
    depthwise = layers.depthwise_kernel_init(key, (5, 5, 1, 4096))
    assert float(depthwise.std()) == pytest.approx((2 / 25) ** 0.5, rel=0.02)
    dense = layers.dense_kernel_init(key, (1280, 1000))
    limit = 1 / 1000**0.5
    assert float(dense.max()) <= limit and float(dense.min()) >= -limit
    assert float(dense.max()) > 0.99 * limit


def _apply_batch_norm(module, x, variables=None):
    if variables is None:  # non-trivial scale, bias and running statistics
        variables = module.init(jax.random.key(0), x)
        variables = jax.tree.map(lambda v: v + jax.random.uniform(jax.random.key(1), v.shape), variables)
    y, updates = module.apply(variables, x, mutable=["batch_stats"])
    return y, updates["batch_stats"], variables


@pytest.mark.parametrize("impl", ["fused", "autodiff"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_batch_norm_matches_flax_in_training_and_eval(dtype, impl):
    x = (jax.random.normal(jax.random.key(2), (4, 5, 5, 3)) * 3 + 1).astype(dtype)
    ours = layers.BatchNorm(False, 0.99, 1e-3, dtype=dtype, impl=impl)
    flax_bn = nn.BatchNorm(use_running_average=False, momentum=0.99, epsilon=1e-3, dtype=dtype)
    y, stats, variables = _apply_batch_norm(ours, x)
    y_ref, stats_ref, _ = _apply_batch_norm(flax_bn, x, variables)
    assert y.dtype == y_ref.dtype == dtype
    np.testing.assert_allclose(np.float32(y), np.float32(y_ref), rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), stats, stats_ref)
    eval_ours = layers.BatchNorm(True, 0.99, 1e-3, dtype=dtype).apply(variables, x)
    eval_ref = nn.BatchNorm(use_running_average=True, epsilon=1e-3, dtype=dtype).apply(variables, x)
    np.testing.assert_allclose(np.float32(eval_ours), np.float32(eval_ref), rtol=1e-5, atol=1e-5)


def test_grouped_batch_norm_normalises_each_slice_by_its_own_statistics():
    x = jax.random.normal(jax.random.key(3), (6, 4, 4, 2)) * jnp.arange(1, 7).reshape(6, 1, 1, 1)
    y, stats, variables = _apply_batch_norm(layers.BatchNorm(False, 0.9, 1e-3, groups=3), x)
    per_slice = [_apply_batch_norm(layers.BatchNorm(False, 0.9, 1e-3), x[i : i + 2], variables) for i in (0, 2, 4)]
    np.testing.assert_allclose(y, jnp.concatenate([out for out, _, _ in per_slice]), rtol=1e-5, atol=1e-5)
    # The running statistics move towards the mean of the groups' statistics.
    for name in ("mean", "var"):
        expected = np.mean([slice_stats[name] for _, slice_stats, _ in per_slice], axis=0)
        np.testing.assert_allclose(stats[name], expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("activation", "groups", "dtype", "offset"),
    [
        (None, 1, jnp.float32, 1.0),
        ("relu", 1, jnp.float32, 1.0),
        ("swish", 1, jnp.float32, 1.0),
        ("swish", 3, jnp.float32, 1.0),
        # Channels whose mean is 20 standard deviations: the fused gradient subtracts mean * sum(grad).
        ("swish", 1, jnp.float32, 20.0),
        ("swish", 2, jnp.bfloat16, 1.0),
    ],
)
def test_fused_batch_norm_gives_the_values_and_gradients_of_autodiff(activation, groups, dtype, offset):
    key_x, key_g = jax.random.split(jax.random.key(groups))
    x = (jax.random.normal(key_x, (6, 5, 7, 4)) * jnp.array([0.5, 1.0, 2.0, 3.0]) + offset).astype(dtype)
    weights = jax.random.normal(key_g, x.shape)

    def run(impl):
        module = layers.batch_norm(True, 0.9, 1e-3, dtype, groups, activation, impl)
        variables = module.init(jax.random.key(0), x)
        params = {"scale": jnp.array([0.5, 1.0, 1.5, -2.0]), "bias": jnp.array([-1.0, 0.0, 0.5, 1.0])}

        def loss(params, x):
            y, updates = module.apply({**variables, "params": params}, x, mutable=["batch_stats"])
            return jnp.sum(y.astype(jnp.float32) * weights), (y, updates["batch_stats"])

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, x)

    (value, (y, stats)), grads = run("fused")
    (ref_value, (ref_y, ref_stats)), ref_grads = run("autodiff")
    assert y.dtype == ref_y.dtype == dtype
    tolerance = 2e-2 if dtype == jnp.bfloat16 else 1e-4
    np.testing.assert_allclose(np.float32(y), np.float32(ref_y), rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(value, ref_value, rtol=tolerance, atol=tolerance)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), stats, ref_stats)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        scale = float(np.max(np.abs(np.float32(want))))
        np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=0, atol=tolerance * scale)


def test_auto_batch_norm_fuses_on_cpu_only():
    assert layers.resolve_batch_norm_impl("auto") == ("fused" if jax.default_backend() == "cpu" else "autodiff")
    assert layers.resolve_batch_norm_impl("autodiff") == "autodiff"


def assert_same_as_nn_conv(conv, reference, x, use_bias):
    """`conv` has `reference`'s params (the same key gives the same kernel: same initialiser), and with
    them its values and gradients (biases offset from their zero init, so that they count)."""
    params = conv.init(jax.random.key(4), x)
    reference_params = reference.init(jax.random.key(4), x)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, reference_params)
    np.testing.assert_array_equal(params["params"]["kernel"], reference_params["params"]["kernel"])
    if use_bias:
        params = jax.tree.map(lambda p: p + 0.5, params)
    weights = jax.random.normal(jax.random.key(5), reference.apply(params, x).shape)

    def loss(module):
        return lambda params, x: jnp.sum(module.apply(params, x) * weights)

    value, grads = jax.jit(jax.value_and_grad(loss(conv), argnums=(0, 1)))(params, x)
    ref_value, ref_grads = jax.jit(jax.value_and_grad(loss(reference), argnums=(0, 1)))(params, x)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("use_bias", [False, True])
def test_pointwise_conv_matches_a_1x1_nn_conv_in_params_values_and_gradients(use_bias):
    pointwise = layers.conv(12, 1, dtype=jnp.float32, use_bias=use_bias)
    assert isinstance(pointwise, layers.PointwiseConv)
    reference = nn.Conv(12, (1, 1), use_bias=use_bias, kernel_init=layers.conv_kernel_init)
    assert_same_as_nn_conv(pointwise, reference, jax.random.normal(jax.random.key(3), (2, 5, 6, 8)), use_bias)


# (kernel, stride, in, out, size, bias): the taps' windows as one matmul (3*3*2 <= 32), one matmul per
# tap (3*3*8 > 12), a 2x2 stride-2 space-to-depth conv, and odd sizes where SAME pads the end more.
@pytest.mark.parametrize("kernel_grad", ["windows", "xla"])
@pytest.mark.parametrize(
    ("kernel", "stride", "channels", "features", "size", "use_bias"),
    [(3, 2, 2, 32, 9, False), (3, 1, 8, 12, 7, True), (2, 2, 8, 16, 6, False), (5, 2, 4, 8, 11, False)],
)
def test_conv_matches_nn_conv_in_params_values_and_gradients(
    kernel, stride, channels, features, size, use_bias, kernel_grad, monkeypatch
):
    monkeypatch.setattr(layers, "resolve_conv_kernel_grad", lambda: kernel_grad)
    conv = layers.conv(features, kernel, (stride, stride), dtype=jnp.float32, use_bias=use_bias)
    assert isinstance(conv, layers.Conv)
    reference = nn.Conv(
        features, (kernel, kernel), strides=(stride, stride), use_bias=use_bias, kernel_init=layers.conv_kernel_init
    )
    x = jax.random.normal(jax.random.key(3), (3, size, size + 1, channels))
    assert_same_as_nn_conv(conv, reference, x, use_bias)
