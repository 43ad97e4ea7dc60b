"""Training at scale: rematerialisation, the start-up memory report, gradient accumulation, LARS/LAMB,
the input-wait fraction and profiling (docs/large_scale.md)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effnetx_jax.errors import UserError
from effnetx_jax.models import REMAT_MODES, create_model, memory, speed
from effnetx_jax.train import train_and_evaluate
from effnetx_jax.train.components import build_components

from conftest import EVERY_BLOCK, PLUMBING_BLOCKS, read_jsonl, tiny_config, tiny_run_config

# ---------------------------------------------------------------------------------------------------
# config.remat
# ---------------------------------------------------------------------------------------------------


def _loss_and_grads(model, variables, images):
    def loss_fn(params):
        logits, updates = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            images,
            train=True,
            rngs={"dropout": jax.random.key(1)},
            mutable=["batch_stats"],
        )
        return jnp.mean(logits**2), updates["batch_stats"]

    return jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(variables["params"])


# Every block type once (EVERY_BLOCK with one repeat each): a third of its compile time.
EVERY_BLOCK_ONCE = tuple(block.replace("r2_", "r1_") for block in EVERY_BLOCK)


def test_remat_gives_the_same_loss_gradients_and_variables_for_every_block_type():
    cfg = tiny_config(EVERY_BLOCK_ONCE, dtype="float32", drop_path=0.2)
    images = jax.random.normal(jax.random.key(0), (2, 32, 32, 3), jnp.float32)
    models = {mode: create_model(cfg, remat=mode) for mode in REMAT_MODES}
    shapes = {
        mode: jax.eval_shape(lambda x, m=model: m.init({"params": jax.random.key(0)}, x), images)
        for mode, model in models.items()
    }
    # The same variable tree: a checkpoint written with one setting restores with any other.
    for mode in REMAT_MODES:
        assert jax.tree_util.tree_structure(shapes[mode]) == jax.tree_util.tree_structure(shapes["none"]), mode
        assert jax.tree.map(lambda a, b: a.shape == b.shape, shapes[mode], shapes["none"])
    variables = speed.random_variables(models["none"], images[:1])  # no initialiser to compile
    (loss, stats), grads = _loss_and_grads(models["none"], variables, images)
    for mode in ("blocks", "full"):
        (other_loss, other_stats), other_grads = _loss_and_grads(models[mode], variables, images)
        np.testing.assert_allclose(other_loss, loss, rtol=1e-6)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), other_grads, grads)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), other_stats, stats)


def test_remat_leaves_the_train_state_unchanged(data_dir):
    # The train state's shapes (what a checkpoint restores into) do not depend on remat, so a workdir
    # trained with one setting resumes with another.
    states = [build_components(tiny_run_config(data_dir, remat=mode)).abstract_state() for mode in REMAT_MODES]
    for state in states[1:]:
        assert jax.tree.structure(state) == jax.tree.structure(states[0])
        assert jax.tree.leaves(state) == jax.tree.leaves(states[0])


def test_unknown_remat_is_refused_naming_the_key_before_compiling(data_dir, tmp_path):
    with pytest.raises(UserError, match=r"config.remat: unknown remat 'some'; expected one of none, blocks, full"):
        train_and_evaluate(tiny_run_config(data_dir, remat="some"), str(tmp_path))
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------------
# The memory report
# ---------------------------------------------------------------------------------------------------


class _DeviceWithMemory:
    def __init__(self, limit):
        self.limit = limit

    def memory_stats(self):
        return {"bytes_limit": self.limit}

    def __str__(self):
        return "gpu:0"


def test_memory_estimate_is_reported_against_the_device_memory():
    compiled = jax.jit(lambda x: x * 2, donate_argnums=0).lower(jnp.ones((256, 1024), jnp.float32)).compile()
    estimate = memory.MemoryEstimate.of(compiled)
    assert estimate.argument_bytes == 2**20
    assert estimate.total_bytes >= 2**20
    (line,) = memory.report(estimate, [_DeviceWithMemory(2**30)], "step")
    assert line.startswith("step on gpu:0: 0.001 GiB (arguments 0.001 GiB") and line.endswith("of 1.000 GiB")
    (line,) = memory.report(estimate, jax.devices()[:1], "step")
    assert line.endswith("(the backend reports no memory size)")  # the CPU
    memory.check_fits(estimate, [_DeviceWithMemory(2**30), *jax.devices()], "step", "levers")
    with pytest.raises(UserError, match=r"^step needs an estimated 0.001 GiB per device but gpu:0 has 0.000 GiB; lev"):
        memory.check_fits(estimate, [_DeviceWithMemory(1000)], "step", "levers")


def test_a_train_step_too_large_for_the_device_stops_before_the_first_step(data_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(memory, "device_bytes", lambda device: 2**18)  # 0.25 MiB: below any model's step
    caplog.set_level("INFO")
    workdir = tmp_path / "run"
    with pytest.raises(UserError) as stopped:
        train_and_evaluate(tiny_run_config(data_dir), str(workdir))
    message = str(stopped.value)
    assert "\n" not in message
    assert message.startswith("the train step needs an estimated ")
    for lever in ("config.batch_size", "config.remat=blocks", "config.fsdp_size"):
        assert lever in message
    assert "train step memory on " in caplog.text and "of 0.000 GiB" in caplog.text
    assert not workdir.exists()  # refused before the run's first write, like every other check


def test_bench_reports_the_memory_its_train_step_is_compiled_to():
    cfg = tiny_config(PLUMBING_BLOCKS, dtype="float32")
    result = speed.benchmark(cfg, batch=16, mode="train", steps=1, warmup=0, remat="blocks")
    assert result["remat"] == "blocks"
    # The same program from shapes alone (benchmarks/memory_table.py): the same estimate.
    assert result["memory_bytes"] == speed.train_step_memory(cfg, batch=16, remat="blocks").total_bytes
    # Another program without remat: a different estimate. Not a smaller one on XLA:CPU, whose scheduler
    # does not order the recomputation to save memory (docs/large_scale.md, the caveat).
    assert speed.train_step_memory(cfg, batch=16).total_bytes != result["memory_bytes"]


# ---------------------------------------------------------------------------------------------------
# config.grad_accum_steps
# ---------------------------------------------------------------------------------------------------


class _LinearClassifier(nn.Module):
    """No BatchNorm and no dropout: its gradient over a batch is the same however the batch is split."""

    @nn.compact
    def __call__(self, images, train: bool = False):
        self.variable("batch_stats", "unused", jnp.zeros, ())  # the train step expects the collection
        return nn.Dense(10)(images.reshape(images.shape[0], -1))


def _one_step(config, batch):
    from effnetx_jax.train import optim, sharding
    from effnetx_jax.train.state import create_train_state
    from effnetx_jax.train.steps import make_train_step

    model = _LinearClassifier()
    tx, schedule = optim.create_optimizer(config, steps_per_epoch=10.0, total_steps=100)
    state, _ = create_train_state(model, tx, jax.random.key(0), (32, 32, 3), sharding.make_mesh(1))
    return jax.jit(make_train_step(model, tx, schedule, config))(state, batch, jax.random.key(1))


def test_accumulated_micro_batches_give_the_update_of_the_whole_batch(data_dir):
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.integers(0, 256, (16, 32, 32, 3), np.uint8),
        "label": rng.integers(0, 10, 16).astype(np.int32),
        "mask": np.array([1.0] * 13 + [0.0] * 3, np.float32),  # padding counts nowhere
        "skipped": np.zeros(16, np.float32),
    }
    whole, whole_metrics = _one_step(tiny_run_config(data_dir, warmup_epochs=0.0), batch)
    accumulated, metrics = _one_step(tiny_run_config(data_dir, warmup_epochs=0.0, grad_accum_steps=4), batch)
    assert int(accumulated.step) == 1  # one update, one learning rate, one EMA step
    for name in ("params", "opt_state", "ema_params"):
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9),
            getattr(accumulated, name),
            getattr(whole, name),
        )
    for key, value in whole_metrics.compute().items():
        np.testing.assert_allclose(metrics.compute()[key], value, rtol=1e-6, err_msg=key)


def test_a_batch_that_does_not_split_into_the_micro_batches_is_refused(data_dir, tmp_path):
    with pytest.raises(UserError, match=r"config.batch_size: batch_size=16 does not split into grad_accum_steps=3"):
        train_and_evaluate(tiny_run_config(data_dir, grad_accum_steps=3), str(tmp_path))
    with pytest.raises(UserError, match=r"config.grad_accum_steps: must be a positive integer"):
        train_and_evaluate(tiny_run_config(data_dir, grad_accum_steps=0), str(tmp_path))


# ---------------------------------------------------------------------------------------------------
# LARS and LAMB
# ---------------------------------------------------------------------------------------------------

# A parameter tree with each kind of leaf the masks tell apart: a kernel (decayed, trust ratio), a bias
# (decayed, no trust ratio) and BatchNorm's scale and bias (neither).
_PARAMS = {
    "stem_conv": {"kernel": np.array([[0.5, -1.0], [2.0, 0.25]], np.float32)},
    "stem_bn": {"scale": np.array([1.0, 0.5], np.float32), "bias": np.array([0.1, -0.2], np.float32)},
    "classifier": {"bias": np.array([0.3, -0.4], np.float32)},
}
_GRADS = {
    "stem_conv": {"kernel": np.array([[0.1, 0.2], [-0.3, 0.05]], np.float32)},
    "stem_bn": {"scale": np.array([0.02, -0.01], np.float32), "bias": np.array([0.5, 0.25], np.float32)},
    "classifier": {"bias": np.array([-0.06, 0.08], np.float32)},
}
_DECAYED = {("stem_conv", "kernel"), ("classifier", "bias")}
_TRUSTED = {("stem_conv", "kernel")}


def _large_batch_step(name):
    from effnetx_jax import recipe
    from effnetx_jax.train import optim

    config = recipe.get_config()
    config.update(optimizer=name, lr_schedule="constant", warmup_epochs=0.0, learning_rate=0.1, batch_size=512)
    config.weight_decay = 0.01
    tx, schedule = optim.create_optimizer(config, steps_per_epoch=10.0, total_steps=100)
    assert optim.loss_weight_decay(config) == 0.0  # decayed by the optimizer, not in the loss
    params = jax.tree.map(jnp.asarray, _PARAMS)
    updates, _ = tx.update(jax.tree.map(jnp.asarray, _GRADS), tx.init(params), params)
    return updates, float(schedule(0)), config


def _by_hand(update_direction, lr, config):
    """-lr * trust ratio * (direction + weight decay), leaf by leaf, with the papers' masks."""
    expected = {}
    for module, leaves in _PARAMS.items():
        for leaf, w in leaves.items():
            u = update_direction(_GRADS[module][leaf]).astype(np.float64)
            if (module, leaf) in _DECAYED:
                u = u + config.weight_decay * w
            ratio = np.linalg.norm(w) / np.linalg.norm(u) if (module, leaf) in _TRUSTED else 1.0
            expected.setdefault(module, {})[leaf] = -lr * ratio * u
    return expected


@pytest.mark.parametrize("name", ["lars", "lamb"])
def test_one_large_batch_optimizer_step_is_the_hand_computed_one(name):
    updates, lr, config = _large_batch_step(name)
    assert lr == pytest.approx(0.2)  # 0.1 per 256 images at batch 512
    if name == "lars":
        # eta * ||w|| / ||g + wd w||, then a momentum that starts at 0: the first step is the scaled update.
        expected = _by_hand(lambda g: g, lr, config)
        expected["stem_conv"]["kernel"] *= config.trust_coefficient
    else:
        # Adam's bias-corrected first step is g / (|g| + eps), with optax's eps 1e-6, to float32's rounding of
        # the bias corrections: 1 - 0.999 is 1.00005e-3 in float32 and 1 - b2 is rounded otherwise.
        expected = _by_hand(lambda g: g / (np.abs(g) + 1e-6), lr, config)
    rtol = 1e-6 if name == "lars" else 1e-4
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol), updates, expected)


def test_polynomial_schedule_decays_from_the_peak_to_zero():
    from effnetx_jax import recipe
    from effnetx_jax.train import optim

    config = recipe.get_config()
    config.update(lr_schedule="polynomial", warmup_epochs=0.0, learning_rate=0.256, batch_size=256)
    schedule = optim.learning_rate_schedule(config, steps_per_epoch=10.0, total_steps=100)
    for step, expected in ((0, 0.256), (50, 0.256 * 0.25), (100, 0.0), (120, 0.0)):
        assert float(schedule(step)) == pytest.approx(expected, abs=1e-7), step


# ---------------------------------------------------------------------------------------------------
# train/input_wait_fraction and config.profile_steps
# ---------------------------------------------------------------------------------------------------


def test_a_run_logs_its_input_wait_and_writes_the_profile_of_the_steps_asked_for(data_dir, tmp_path):
    config = tiny_run_config(data_dir, total_steps=4, log_every_steps=2, checkpoint_every_steps=0, profile_steps=(2, 3))
    train_and_evaluate(config, str(tmp_path))
    windows = [line for line in read_jsonl(tmp_path) if "train/loss" in line]
    assert [line["step"] for line in windows] == [2, 4]
    for line in windows:
        assert line["train/img_per_s"] > 0
        assert 0 <= line["train/input_wait_fraction"] <= 1
    traces = list((tmp_path / "profile").rglob("*.xplane.pb"))
    assert traces and all(trace.stat().st_size > 0 for trace in traces)


@pytest.mark.parametrize("steps", [(3,), (0, 2), (5, 4), (1.5, 2)])
def test_bad_profile_steps_are_refused_naming_the_key(data_dir, tmp_path, steps):
    with pytest.raises(UserError, match=r"^config.profile_steps: must be \(\) or \(first, last\) with 1 <= first"):
        train_and_evaluate(tiny_run_config(data_dir, profile_steps=steps), str(tmp_path))
