"""Every block type at tiny width and 32 px: finite forward/backward, gradients everywhere, modes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effnetx_jax.models import architecture, create_model
from effnetx_jax.models.block_parts import SqueezeExciteLayer
from effnetx_jax.models.blocks import BLOCK_TYPES
from effnetx_jax.weights.convert.layout import model_layers

from conftest import EVERY_BLOCK, init_variables, tiny_config


def test_every_block_type_is_present():
    arch = architecture(tiny_config(EVERY_BLOCK, activation="swish", width=0.5))
    kinds = {
        (s.block_type, s.space_to_depth_conv, s.space_to_batch, s.se_filters > 0, s.has_residual, s.activation)
        for s in arch.blocks
    }
    assert ("mbconv", True, 0, True, False, "relu") in kinds
    assert ("fused", False, 0, True, True, "swish") in kinds
    assert ("mbconv", False, 2, False, True, "swish") in kinds
    assert ("conv", False, 0, False, False, "swish") in kinds
    assert ("mbconv", False, 0, True, False, "relu") in kinds  # noskip although shapes match
    assert ("mbconv", False, 0, True, True, "swish") in kinds
    assert {s.block_type for s in arch.blocks} == set(BLOCK_TYPES), "EVERY_BLOCK must have every block type"


def _described_variables(layer) -> list[tuple[tuple[str, ...], tuple[int, ...]]]:
    """The kernels a described layer's module owns: (path in the block, shape)."""
    if isinstance(layer, SqueezeExciteLayer):
        return [
            (("se", "reduce"), (1, 1, layer.channels, layer.reduced_channels)),
            (("se", "expand"), (1, 1, layer.reduced_channels, layer.channels)),
        ]
    per_group = layer.in_channels // layer.groups
    return [
        ((layer.conv_name,), (layer.kernel, layer.kernel, per_group, layer.out_channels)),
        ((layer.bn_name,), (layer.out_channels,)),
    ]


def test_every_block_builds_the_layers_its_type_describes_in_that_order():
    # What costs count and what the model holds (and the TF converter names by call order) are one list.
    cfg = tiny_config(EVERY_BLOCK, activation="swish", width=0.5)
    built: dict[str, list] = {}
    for layer in model_layers(cfg):
        if layer.path[0].startswith("blocks_"):
            shape = layer.variables.get(("params", "kernel"), layer.variables.get(("params", "scale")))
            built.setdefault(layer.path[0], []).append((layer.path[1:], shape))
    for spec in architecture(cfg).blocks:
        described = [v for layer in BLOCK_TYPES[spec.block_type].describe(spec) for v in _described_variables(layer)]
        assert built[f"blocks_{spec.index}"] == described, spec


@pytest.fixture(scope="module")
def every_block_model():
    cfg = tiny_config(EVERY_BLOCK, activation="swish", width=0.5, drop_path=0.0)
    model = create_model(cfg)
    return model, init_variables(model)


def _loss(model, variables, images, labels, rng):
    def fn(params):
        logits, _ = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            images,
            train=True,
            rngs={"dropout": rng},
            mutable=["batch_stats"],
        )
        return jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(labels.size), labels]) * -1

    return fn


def test_forward_backward_finite_and_every_parameter_gets_a_gradient(every_block_model):
    model, variables = every_block_model
    images = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    labels = jnp.arange(4) % 10
    loss, grads = jax.jit(jax.value_and_grad(_loss(model, variables, images, labels, jax.random.key(2))))(
        variables["params"]
    )
    assert np.isfinite(float(loss))
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    assert len(flat) > 50
    for path, grad in flat:
        assert np.all(np.isfinite(grad)), jax.tree_util.keystr(path)
        assert float(jnp.abs(grad).max()) > 0, f"no gradient reaches {jax.tree_util.keystr(path)}"


def test_train_and_eval_modes(every_block_model):
    model, variables = every_block_model
    images = jax.random.normal(jax.random.key(3), (4, 32, 32, 3))
    eval_fn = jax.jit(lambda v, x: model.apply(v, x, train=False))
    train_fn = jax.jit(lambda v, x, rng: model.apply(v, x, train=True, rngs={"dropout": rng}, mutable=["batch_stats"]))
    eval_logits = eval_fn(variables, images)
    np.testing.assert_array_equal(eval_logits, eval_fn(variables, images))
    train_logits, updates = train_fn(variables, images, jax.random.key(0))
    # Batch statistics instead of running averages, and the running averages move (momentum 0.99).
    assert not np.allclose(train_logits, eval_logits, atol=1e-3)
    old_mean = variables["batch_stats"]["stem_bn"]["mean"]
    new_mean = updates["batch_stats"]["stem_bn"]["mean"]
    assert not np.allclose(old_mean, new_mean)
    # Dropout (rate 0.2 before the classifier) depends on the rng in training only.
    other_logits, _ = train_fn(variables, images, jax.random.key(1))
    assert not np.allclose(train_logits, other_logits)


def test_drop_path_is_active_in_training_only():
    cfg = tiny_config(("r3_k3_s11_e2_i32_o32",), width=0.5, drop_path=0.9, dropout=0.0)
    model = create_model(cfg)
    variables = init_variables(model)
    images = jax.random.normal(jax.random.key(4), (8, 32, 32, 3))
    train = jax.jit(
        lambda rng: model.apply(variables, images, train=True, rngs={"dropout": rng}, mutable=["batch_stats"])[0]
    )
    assert not np.allclose(train(jax.random.key(0)), train(jax.random.key(1)))
    assert architecture(cfg).blocks[2].drop_path_rate == pytest.approx(0.9 * 2 / 3)


def test_bfloat16_compute_keeps_float32_parameters(every_block_model):
    model, variables = every_block_model
    cfg = tiny_config(EVERY_BLOCK, activation="swish", width=0.5, drop_path=0.0, dtype="bfloat16")
    bf16_model = create_model(cfg)
    bf16_variables = jax.eval_shape(lambda: init_variables(bf16_model))
    assert jax.tree.structure(bf16_variables) == jax.tree.structure(variables)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(bf16_variables))
    images = jax.random.normal(jax.random.key(5), (2, 32, 32, 3))
    logits32 = jax.jit(lambda v, x: model.apply(v, x))(variables, images)
    logits16 = jax.jit(lambda v, x: bf16_model.apply(v, x))(variables, images)
    assert logits16.dtype == jnp.float32
    np.testing.assert_allclose(logits16, logits32, atol=0.15 * float(jnp.abs(logits32).max()) + 0.05)


def test_depthwise_choice_does_not_change_checkpoints_or_outputs(every_block_model):
    model, variables = every_block_model
    cfg = tiny_config(EVERY_BLOCK, activation="swish", width=0.5, drop_path=0.0, depthwise_impl="xla")
    xla_model = create_model(cfg)
    xla_shapes = jax.tree.map(jnp.shape, jax.eval_shape(lambda: init_variables(xla_model)))
    assert xla_shapes == jax.tree.map(jnp.shape, variables)
    images = jax.random.normal(jax.random.key(6), (2, 32, 32, 3))
    outputs = [jax.jit(lambda v, x, m=m: m.apply(v, x))(variables, images) for m in (model, xla_model)]
    np.testing.assert_allclose(*outputs, rtol=1e-4, atol=1e-4)
