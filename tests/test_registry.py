"""Golden numbers of the registered variants (reference §1.3, §1.5), built with jax.eval_shape only."""

import jax
import pytest

from effnetx_jax.models import VARIANTS, architecture, create_model, model_config
from effnetx_jax.models.costs import total_macs
from effnetx_jax.models.summary import abstract_variables, block_output_shapes


def param_count(name):
    model = create_model(model_config(name))
    variables = abstract_variables(model, model_config(name).resolution)
    return sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))


def test_exact_parameter_counts_b0():
    assert param_count("efficientnet-b0") == 5_288_548
    assert param_count("efficientnet-x-b0") == 7_584_104


def test_parameter_counts_b7():
    assert round(param_count("efficientnet-b7") / 1e6, 2) == 66.35
    assert round(param_count("efficientnet-x-b7") / 1e6, 2) == 73.16


@pytest.mark.parametrize(
    ("name", "macs"),
    [
        ("efficientnet-b0", 0.386e9),
        ("efficientnet-x-b0", 0.920e9),
        ("efficientnet-b7", 37.75e9),
        ("efficientnet-x-b7", 91.79e9),
    ],
)
def test_macs_match_reference(name, macs):
    assert total_macs(architecture(model_config(name))) == pytest.approx(macs, rel=0.005)


def test_x_b0_block_output_shapes():
    # Reference §1.3: (blocks with that output shape) -> HxWxC at 224 px.
    expected = {
        (0,): (56, 56, 64),
        (1, 2): (56, 56, 24),
        (3, 4): (28, 28, 40),
        (5, 6, 7): (14, 14, 80),
        (8, 9, 10): (14, 14, 112),
        (11, 12, 13, 14): (7, 7, 192),
        (15,): (7, 7, 320),
    }
    model = create_model(model_config("efficientnet-x-b0"))
    shapes = block_output_shapes(model, abstract_variables(model, 224), 224)
    for indices, shape in expected.items():
        for index in indices:
            assert shapes[f"blocks_{index}"] == (1, *shape)
    assert shapes["logits"] == (1, 1000)
    assert len([name for name in shapes if name.startswith("blocks_")]) == 16


def _sizes_marked():
    """Every variant; B4-B7 (several seconds each to trace) in the slow tier, B0-B3 in the fast one too."""
    return [pytest.param(name, marks=pytest.mark.slow) if name[-1] in "4567" else name for name in VARIANTS]


@pytest.mark.parametrize("name", _sizes_marked())
def test_every_variant_builds_at_its_resolution(name):
    cfg = model_config(name)
    model = create_model(cfg)
    images = jax.ShapeDtypeStruct((2, cfg.resolution, cfg.resolution, 3), "float32")
    # One abstract trace of init gives the variables and the (eval-mode) logits.
    logits, variables = jax.eval_shape(lambda x: model.init_with_output({"params": jax.random.key(0)}, x), images)
    assert logits.shape == (2, 1000) and logits.dtype == "float32"
    assert set(variables) == {"params", "batch_stats"}
    assert all(leaf.dtype == "float32" for leaf in jax.tree.leaves(variables))
