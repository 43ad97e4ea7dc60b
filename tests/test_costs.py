"""Analytic MACs cross-checked against XLA's cost analysis of the model's own conv and dot ops."""

import jax
import jax.numpy as jnp
import pytest

from effnetx_jax.models import architecture, costs, create_model, model_config
from effnetx_jax.models.costs import total_macs
from effnetx_jax.models.summary import abstract_variables, parameter_count

from conftest import EVERY_BLOCK, tiny_config


def _sub_jaxprs(params):
    for value in params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, jax.extend.core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jax.extend.core.Jaxpr):
                yield item


def _without_padding(avals, params):
    """The same conv on an input padded beforehand: XLA's cost analysis skips taps that land in the
    padding, the MAC convention counts every tap (reference §1.5)."""
    lhs, rhs = avals
    spatial = params["dimension_numbers"].lhs_spec[2:]
    shape = list(lhs.shape)
    for axis, (low, high) in zip(spatial, params["padding"], strict=True):
        shape[axis] += low + high
    padding = tuple((0, 0) for _ in spatial)
    return [jax.ShapeDtypeStruct(shape, lhs.dtype), rhs], {**params, "padding": padding}


def xla_macs(model, variables, images) -> int:
    """Half the flops XLA reports for every convolution and dot in the traced model."""
    total = 0

    def walk(jaxpr):
        nonlocal total
        for eqn in jaxpr.eqns:
            for sub in _sub_jaxprs(eqn.params):
                walk(sub)
            if eqn.primitive.name not in ("conv_general_dilated", "dot_general"):
                continue
            avals = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in eqn.invars]
            params = dict(eqn.params)
            if eqn.primitive.name == "conv_general_dilated":
                avals, params = _without_padding(avals, params)
            lowered = jax.jit(lambda *args, p=eqn.primitive, kw=params: p.bind(*args, **kw)).lower(*avals)
            total += round(lowered.cost_analysis()["flops"] / 2)

    walk(jax.make_jaxpr(lambda v, x: model.apply(v, x))(variables, images).jaxpr)
    return total


@pytest.mark.parametrize(
    "cfg",
    [
        model_config("efficientnet-b0"),
        model_config("efficientnet-x-b0"),
        tiny_config(EVERY_BLOCK, activation="swish", width=0.5),
    ],
    ids=["efficientnet-b0", "efficientnet-x-b0", "every-block-type"],
)
def test_analytic_macs_equal_xla_cost_analysis(cfg):
    cfg.depthwise_impl = "xla"  # a convolution XLA can count, not shifted slices
    model = create_model(cfg)
    variables = abstract_variables(model, cfg.resolution)
    images = jax.ShapeDtypeStruct((1, cfg.resolution, cfg.resolution, 3), jnp.float32)
    assert xla_macs(model, variables, images) == total_macs(architecture(cfg))


def test_whole_model_cost_analysis_differs_only_by_padding_and_elementwise_work():
    # Documented in the README: XLA's whole-model flops skip padded taps and add BN/activation/SE work.
    cfg = model_config("efficientnet-x-b0")
    cfg.depthwise_impl = "xla"
    model = create_model(cfg)
    variables = abstract_variables(model, 224)
    images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    flops = jax.jit(lambda v, x: model.apply(v, x)).lower(variables, images).cost_analysis()["flops"]
    assert flops / 2 == pytest.approx(total_macs(architecture(cfg)), rel=0.03)


def test_bytes_moved_of_a_block_by_hand():
    # EfficientNet-B0 block 0 at 112x112: depthwise 3x3 on 32 channels, SE 32 -> 8 -> 32, project to 16.
    arch = architecture(model_config("efficientnet-b0"))
    block = costs.block_costs(arch)[0]
    pixels = 112 * 112
    depthwise = (2 * pixels * 32, 9 * 32)
    se = (pixels * 32, 2 * 32 * 8 + 32 + 8)
    project = (pixels * 32 + pixels * 16, 32 * 16)
    activations = sum(layer[0] for layer in (depthwise, se, project))
    weights = sum(layer[1] for layer in (depthwise, se, project))
    assert [layer.name for layer in block.layers] == ["depthwise", "se", "project"]
    assert costs.bytes_moved(block.layers, batch=1, dtype_bytes=4) == 4 * (activations + weights)
    assert costs.bytes_moved(block.layers, batch=8, dtype_bytes=2) == 2 * (8 * activations + weights)
    flops = 2 * 8 * block.macs
    assert costs.intensity(block.layers, batch=8, dtype_bytes=2) == pytest.approx(
        flops / (2 * (8 * activations + weights))
    )


def test_intensity_grows_with_batch_and_halves_with_twice_the_element_size():
    layers = costs.all_layers(architecture(model_config("efficientnet-x-b0")))
    at_1, at_128 = costs.intensity(layers, 1, 2), costs.intensity(layers, 128, 2)
    assert at_128 > at_1  # weights are read once per batch
    assert costs.intensity(layers, 128, 4) == pytest.approx(at_128 / 2)
    assert sum(layer.macs for layer in layers) == total_macs(architecture(model_config("efficientnet-x-b0")))


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("efficientnet-b0", 5_288_548),
        ("efficientnet-x-b0", 7_584_104),
        ("efficientnet-b7", 66_347_960),
        ("efficientnet-x-b7", 73_156_704),
    ],
)
def test_analytic_parameter_count_of_the_golden_variants(name, count):
    # The counts test_registry reads off the built model (and the reference's, §1.5), here without one.
    assert costs.parameter_count(architecture(model_config(name))) == count


def test_analytic_parameter_count_equals_the_traced_model_for_every_block_type():
    cfg = tiny_config(EVERY_BLOCK, activation="swish", width=0.5)
    assert costs.parameter_count(architecture(cfg)) == parameter_count(cfg)
