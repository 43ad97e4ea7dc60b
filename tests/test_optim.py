"""The official recipe's optimizer, schedule, weight decay and EMA against hand-computed TF semantics."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from effnetx_jax.models import create_model
from effnetx_jax.train.optim import (
    create_optimizer,
    ema_decay,
    ema_update,
    l2_penalty,
    learning_rate_schedule,
    tf_rmsprop,
    weight_decay_mask,
)

from conftest import EVERY_BLOCK, tiny_config

# Three steps whose learning rates change (as under warm-up and decay) and whose gradients differ.
LEARNING_RATES = (0.1, 0.2, 0.05)
INITIAL_PARAMS = np.array([1.0, -2.0, 0.5, 3.0])
GRADIENTS = (
    np.array([0.5, -1.0, 2.0, 0.0]),
    np.array([-0.3, 0.7, 1.5, 0.1]),
    np.array([0.2, 0.2, -4.0, -0.6]),
)


def tf1_rmsprop_trace(lr_inside_momentum=True):
    """TF1 RMSPropOptimizer written out in numpy (float64): ms starts at 1, eps inside the sqrt."""
    var, ms, mom = INITIAL_PARAMS.copy(), np.ones(4), np.zeros(4)
    trace = []
    for lr, g in zip(LEARNING_RATES, GRADIENTS, strict=True):
        ms = 0.9 * ms + 0.1 * g**2
        if lr_inside_momentum:
            mom = 0.9 * mom + lr * g / np.sqrt(ms + 1e-3)
            var = var - mom
        else:  # the other convention (PyTorch-like): momentum of g/rms, scaled by today's rate
            mom = 0.9 * mom + g / np.sqrt(ms + 1e-3)
            var = var - lr * mom
        trace.append(var)
    return trace


def lr_by_step(count):
    return jnp.asarray(LEARNING_RATES, jnp.float32)[count]


def run_optimizer(tx, steps=3):
    params = jnp.asarray(INITIAL_PARAMS, jnp.float32)
    state = tx.init(params)
    update = jax.jit(tx.update)
    trace = []
    for g in GRADIENTS[:steps]:
        updates, state = update(jnp.asarray(g, jnp.float32), state, params)
        params = optax.apply_updates(params, updates)
        trace.append(np.asarray(params))
    return trace, state


def recipe_config(**overrides):
    cfg = ml_collections.ConfigDict(
        dict(
            optimizer="rmsprop",
            learning_rate=0.016,
            batch_size=256,
            lr_schedule="exponential",
            warmup_epochs=5.0,
            lr_decay_factor=0.97,
            lr_decay_epochs=2.4,
            rmsprop_decay=0.9,
            momentum=0.9,
            rmsprop_epsilon=1e-3,
        )
    )
    cfg.update(overrides)
    return cfg


# ---------------------------------------------------------------------------------------------------
# RMSprop
# ---------------------------------------------------------------------------------------------------


def test_rmsprop_matches_hand_computed_tf1_trace():
    trace, _ = run_optimizer(tf_rmsprop(lr_by_step))
    for got, want in zip(trace, tf1_rmsprop_trace(), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_the_trace_tells_where_the_learning_rate_enters_momentum():
    # Guards the test above: with these rates the two conventions differ far beyond its tolerance.
    inside, outside = tf1_rmsprop_trace(True)[-1], tf1_rmsprop_trace(False)[-1]
    assert np.max(np.abs(inside - outside)) > 1e-2


def test_rmsprop_first_step_by_hand():
    # ms = 0.9 + 0.1 * 0.25 = 0.925; mom = 0.1 * 0.5 / sqrt(0.926); var = 1 - mom.
    trace, _ = run_optimizer(tf_rmsprop(lr_by_step), steps=1)
    assert trace[0][0] == pytest.approx(1.0 - 0.05 / math.sqrt(0.926), abs=1e-6)
    # A zero gradient moves nothing on the first step.
    assert trace[0][3] == 3.0


def test_rmsprop_matches_tensorflow():
    tf = pytest.importorskip("tensorflow")
    var = tf.Variable(INITIAL_PARAMS.astype(np.float32))
    current = {}
    opt = tf.compat.v1.train.RMSPropOptimizer(
        learning_rate=lambda: current["lr"], decay=0.9, momentum=0.9, epsilon=1e-3
    )
    want = []
    for lr, g in zip(LEARNING_RATES, GRADIENTS, strict=True):
        current["lr"] = lr
        opt.apply_gradients([(tf.constant(g.astype(np.float32)), var)])
        want.append(var.numpy())
    got, _ = run_optimizer(tf_rmsprop(lr_by_step))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-6)


def test_rmsprop_constant_rate_and_state_shapes():
    params = {"conv": {"kernel": jnp.ones((3, 3, 2, 4))}, "bias": jnp.zeros((4,))}
    tx = tf_rmsprop(0.1)
    state = tx.init(params)
    rms, _, momentum = state
    assert jax.tree.map(jnp.shape, rms.nu) == jax.tree.map(jnp.shape, params)
    assert jax.tree.map(jnp.shape, momentum.trace) == jax.tree.map(jnp.shape, params)
    # The accumulator starts at 1 (TF1), the momentum at 0, and the step count is kept.
    assert all(bool(jnp.all(leaf == 1.0)) for leaf in jax.tree.leaves(rms.nu))
    assert all(bool(jnp.all(leaf == 0.0)) for leaf in jax.tree.leaves(momentum.trace))
    assert int(state[1].count) == 0
    _, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    assert int(state[1].count) == 1


# ---------------------------------------------------------------------------------------------------
# Learning-rate schedule
# ---------------------------------------------------------------------------------------------------


def schedule_values(schedule, steps):
    values = jax.jit(jax.vmap(schedule))(jnp.asarray(steps, jnp.int32))
    return [float(v) for v in values]


def test_exponential_schedule_with_the_imagenet_recipe():
    # ImageNet at batch 2048: 625.57 steps per epoch, 3127 warm-up steps, decay every 1501.37 steps.
    steps_per_epoch = 1281167 / 2048
    cfg = recipe_config(batch_size=2048)
    schedule = learning_rate_schedule(cfg, steps_per_epoch, total_steps=218949)
    peak = 0.016 * 2048 / 256
    assert peak == pytest.approx(0.128)
    steps = [0, 1000, 3126, 3127, 4504, 4505, 218949]
    want = [
        0.0,
        peak * 1000 / 3127,
        peak * 3126 / 3127,
        # Decay counts from step 0, so the warm-up ends on the third staircase level.
        peak * 0.97**2,
        peak * 0.97**2,
        peak * 0.97**3,  # 4505 / 1501.37 = 3.0006: the first boundary after warm-up
        peak * 0.97 ** math.floor(218949 / (steps_per_epoch * 2.4)),
    ]
    np.testing.assert_allclose(schedule_values(schedule, steps), want, rtol=1e-5)


def test_exponential_schedule_boundary_after_warmup():
    # 10 steps per epoch: warm-up 10 steps, decay every 24 steps.
    schedule = learning_rate_schedule(recipe_config(warmup_epochs=1), 10, total_steps=100)
    steps = [0, 5, 9, 10, 23, 24, 47, 48]
    want = [0.0, 0.008, 0.0144, 0.016, 0.016, 0.016 * 0.97, 0.016 * 0.97, 0.016 * 0.97**2]
    np.testing.assert_allclose(schedule_values(schedule, steps), want, rtol=1e-6)


def test_cosine_schedule():
    cfg = recipe_config(lr_schedule="cosine", batch_size=512)
    schedule = learning_rate_schedule(cfg, 10, total_steps=1000)
    peak = 0.032
    steps = [0, 25, 49, 50, 500, 1000]
    want = [
        0.0,
        peak / 2,
        peak * 49 / 50,
        0.5 * peak * (1 + math.cos(math.pi * 50 / 1000)),
        peak / 2,
        0.0,
    ]
    np.testing.assert_allclose(schedule_values(schedule, steps), want, rtol=1e-6, atol=1e-9)


def test_constant_schedule_and_batch_scaling():
    for batch, peak in [(256, 0.016), (1024, 0.064), (4096, 0.256)]:
        schedule = learning_rate_schedule(recipe_config(lr_schedule="constant", batch_size=batch), 10, 100)
        np.testing.assert_allclose(schedule_values(schedule, [0, 25, 50, 99]), [0, peak / 2, peak, peak], rtol=1e-6)


def test_no_warmup_starts_at_the_peak():
    schedule = learning_rate_schedule(recipe_config(warmup_epochs=0), 10, 100)
    np.testing.assert_allclose(schedule_values(schedule, [0, 24]), [0.016, 0.016 * 0.97], rtol=1e-6)
    # A warm-up shorter than one step rounds to none, as in TF.
    schedule = learning_rate_schedule(recipe_config(warmup_epochs=0.05), 10, 100)
    assert schedule_values(schedule, [0]) == pytest.approx([0.016])


def test_schedule_accepts_python_ints():
    schedule = learning_rate_schedule(recipe_config(), 10, 100)
    assert float(schedule(25)) == pytest.approx(0.016 * 25 / 50)


def test_unknown_schedule_is_named():
    with pytest.raises(ValueError, match=r"config\.lr_schedule: unknown schedule 'linear'"):
        learning_rate_schedule(recipe_config(lr_schedule="linear"), 10, 100)


# ---------------------------------------------------------------------------------------------------
# create_optimizer
# ---------------------------------------------------------------------------------------------------


def test_create_optimizer_rmsprop_follows_the_schedule():
    cfg = recipe_config(learning_rate=0.1, warmup_epochs=0, lr_schedule="constant")
    tx, schedule = create_optimizer(cfg, steps_per_epoch=10, total_steps=100)
    assert float(schedule(0)) == pytest.approx(0.1)
    trace, _ = run_optimizer(tx, steps=1)
    np.testing.assert_allclose(trace[0], tf1_rmsprop_trace()[0], atol=1e-6)


@pytest.mark.parametrize("name", ["momentum", "sgd", "adam"])
def test_create_optimizer_alternatives_take_a_step(name):
    tx, _ = create_optimizer(recipe_config(optimizer=name, warmup_epochs=0), 10, 100)
    trace, _ = run_optimizer(tx, steps=1)
    assert np.all(np.isfinite(trace[0]))
    assert not np.allclose(trace[0][:3], INITIAL_PARAMS[:3])


def test_momentum_is_tf_momentum():
    cfg = recipe_config(optimizer="momentum", warmup_epochs=0, lr_schedule="constant", learning_rate=0.1)
    tx, _ = create_optimizer(cfg, 10, 100)
    trace, _ = run_optimizer(tx, steps=2)
    accumulation = GRADIENTS[0]
    after_one = INITIAL_PARAMS - 0.1 * accumulation
    accumulation = 0.9 * accumulation + GRADIENTS[1]
    np.testing.assert_allclose(trace[1], after_one - 0.1 * accumulation, atol=1e-6)


def test_sgd_is_plain_gradient_descent():
    cfg = recipe_config(optimizer="sgd", warmup_epochs=0, lr_schedule="constant", learning_rate=0.1)
    trace, _ = run_optimizer(create_optimizer(cfg, 10, 100)[0], steps=2)
    np.testing.assert_allclose(trace[1], INITIAL_PARAMS - 0.1 * GRADIENTS[0] - 0.1 * GRADIENTS[1], atol=1e-6)


def test_unknown_optimizer_is_named():
    with pytest.raises(ValueError, match=r"config\.optimizer: unknown optimizer 'adagrad'; expected one of adam"):
        create_optimizer(recipe_config(optimizer="adagrad"), 10, 100)


# ---------------------------------------------------------------------------------------------------
# Weight decay
# ---------------------------------------------------------------------------------------------------


def test_weight_decay_mask_on_a_real_model():
    model = create_model(tiny_config(EVERY_BLOCK))
    # Shapes are all the mask needs, so the params are traced, not computed.
    images = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    params = jax.eval_shape(lambda x: model.init({"params": jax.random.key(0)}, x), images)["params"]
    mask = weight_decay_mask(params)
    assert jax.tree.structure(mask) == jax.tree.structure(params)
    assert mask["stem_bn"]["scale"] is False and mask["stem_bn"]["bias"] is False
    assert mask["blocks_3"]["project_bn"]["bias"] is False
    assert mask["blocks_0"]["depthwise_bn"]["scale"] is False
    assert mask["blocks_0"]["se"]["expand"]["bias"] is True
    assert mask["blocks_0"]["se"]["reduce"]["bias"] is True
    assert mask["blocks_0"]["depthwise"]["kernel"] is True
    assert mask["classifier"]["bias"] is True and mask["classifier"]["kernel"] is True
    assert mask["head_conv"]["kernel"] is True
    # Exactly the BN scales and biases are left out.
    flat = jax.tree_util.tree_flatten_with_path(mask)[0]
    for path, decayed in flat:
        in_bn = any(entry.key.endswith("_bn") for entry in path)
        assert decayed is not in_bn, jax.tree_util.keystr(path)
    bn_leaves = [path for path, decayed in flat if not decayed]
    assert {path[-1].key for path in bn_leaves} == {"scale", "bias"}


def test_l2_penalty_is_tf_l2_loss_over_masked_leaves():
    params = {
        "conv": {"kernel": jnp.array([1.0, 2.0])},
        "conv_bn": {"scale": jnp.array([3.0]), "bias": jnp.array([4.0])},
        "dense": {"bias": jnp.array([[0.5, -1.5]], jnp.bfloat16)},
    }
    penalty = l2_penalty(params, weight_decay_mask(params))
    assert penalty.dtype == jnp.float32
    assert float(penalty) == pytest.approx((1 + 4) / 2 + (0.25 + 2.25) / 2)
    # Inside jit the mask is usually built from the params' structure; it may also come in traced.
    built_inside = jax.jit(lambda p: l2_penalty(p, weight_decay_mask(p)))
    assert float(built_inside(params)) == pytest.approx(3.75)
    assert float(jax.jit(l2_penalty)(params, weight_decay_mask(params))) == pytest.approx(3.75)


# ---------------------------------------------------------------------------------------------------
# EMA
# ---------------------------------------------------------------------------------------------------


def test_ema_decay_warms_up_like_tf():
    assert float(ema_decay(1, 0.9999)) == pytest.approx(2 / 11)
    assert float(ema_decay(10, 0.9999)) == pytest.approx(11 / 20)
    assert float(ema_decay(100000, 0.9999)) == pytest.approx(0.9999)
    assert float(ema_decay(jnp.int32(1000), 0.5)) == pytest.approx(0.5)


def test_ema_update_math():
    ema = {"params": {"w": jnp.array([1.0, 2.0])}, "batch_stats": {"mean": jnp.array([0.0])}}
    new = {"params": {"w": jnp.array([3.0, -2.0])}, "batch_stats": {"mean": jnp.array([11.0])}}
    out = jax.jit(ema_update, static_argnums=3)(ema, new, 1, 0.9999)
    d = 2 / 11
    np.testing.assert_allclose(out["params"]["w"], [d * 1 + (1 - d) * 3, d * 2 + (1 - d) * -2], rtol=1e-6)
    np.testing.assert_allclose(out["batch_stats"]["mean"], [(1 - d) * 11], rtol=1e-6)
    late = ema_update(ema, new, 10**6, 0.9999)
    np.testing.assert_allclose(late["params"]["w"], [0.9999 + 0.0003, 1.9998 - 0.0002], rtol=1e-6)
    # An average of a value that did not move stays exactly where it is, at any rate.
    values = jnp.asarray(np.random.default_rng(0).normal(size=1000), jnp.float32)
    np.testing.assert_array_equal(jax.jit(ema_update, static_argnums=3)(values, values, 3, 0.9999), values)
