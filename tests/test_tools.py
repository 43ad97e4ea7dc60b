"""The summary and bench command lines: their `main(argv)` in this process (what `python -m` calls), and a
real process where the exit status is the point."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effnetx_jax import cpu_codegen
from effnetx_jax.models import architecture, block_parts, costs, create_model, model_config, speed
from effnetx_jax.models import summary as model_summary
from effnetx_jax.models.block_parts import GatedProjection

from command_line import error_line, run_tool, tool_module
from conftest import PLUMBING_BLOCKS

TINY_CONFIG = f"""
from effnetx_jax.models import model_config

def get_config(arg="relu"):
    model = model_config("efficientnet-x-b0")
    model.update(name="tiny", blocks={PLUMBING_BLOCKS}, width=0.25, depth=1.0, resolution=32, num_classes=10)
    model.update(head_filters=64, activation=arg)
    return model
"""


def run_main(tool: str, capsys, *args) -> str:
    """The stdout of `effnetx-<tool> args...` run in this process, which must succeed."""
    capsys.readouterr()
    assert run_tool(tool, *args) is None
    return capsys.readouterr().out


def test_summary_json_for_a_registered_model(capsys):
    (entry,) = json.loads(run_main("summary", capsys, "efficientnet-x-b0", "--json"))
    assert (entry["name"], entry["params"], entry["resolution"]) == ("efficientnet-x-b0", 7_584_104, 224)
    assert entry["macs"] == 920_421_088
    assert len(entry["blocks"]) == 16
    assert entry["blocks"][0]["type"] == "mbconv+s2d" and entry["blocks"][0]["output_shape"] == [56, 56, 64]
    assert sum(block["params"] for block in entry["blocks"]) < entry["params"]
    # Traffic at batch 1 in the model's float32: blocks plus stem and head make the whole model.
    assert (entry["batch"], entry["dtype"]) == (1, "float32")
    assert sum(block["bytes"] for block in entry["blocks"]) < entry["bytes"]
    assert entry["flops"] == 2 * entry["macs"]
    assert entry["intensity"] == pytest.approx(entry["flops"] / entry["bytes"], abs=0.01)


def test_summary_traffic_follows_batch_and_dtype(capsys):
    (entry,) = json.loads(run_main("summary", capsys, "efficientnet-b0", "--json", "--batch=64", "--dtype=bfloat16"))
    (single,) = json.loads(run_main("summary", capsys, "efficientnet-b0", "--json"))
    assert (entry["batch"], entry["dtype"], entry["flops"]) == (64, "bfloat16", 64 * single["flops"])
    assert entry["intensity"] > 2 * single["intensity"]  # half the bytes per element, weights amortised


def test_summary_table_for_a_config_file_with_an_argument(tmp_path, capsys):
    path = tmp_path / "tiny.py"
    path.write_text(TINY_CONFIG)
    table = run_main("summary", capsys, f"--config={path}:swish")
    assert table.startswith("tiny @ 32px")
    assert "swish" in table and "params" in table and "MACs" in table


def test_summary_of_every_variant_is_machine_readable():
    result = model_summary.summarize(model_config("efficientnet-x-tpu-b3"))
    assert result["resolution"] == 263 and len(result["blocks"]) == 29
    assert {"name", "params", "macs", "blocks", "resolution"} <= set(result)


@pytest.mark.slow
def test_summary_rejects_a_bad_model_name():
    result = subprocess.run(
        [sys.executable, "-m", "effnetx_jax.cli.summary", "efficientnet-x-b9"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "unknown model 'efficientnet-x-b9'" in result.stderr


def test_bench_reports_compile_and_step_times(tmp_path, capsys):
    path = tmp_path / "tiny.py"
    path.write_text(TINY_CONFIG)
    for mode in ("infer", "train"):
        line = run_main(
            "bench", capsys, f"--config={path}", "--batch=4", f"--mode={mode}", "--steps=2", "--warmup=1", "--json"
        )
        result = json.loads(line)
        assert result["mode"] == mode and result["batch"] == 4 and result["resolution"] == 32
        assert result["compile_s"] > 0 and 0 < result["min_ms"] <= result["median_ms"]
        assert result["images_per_s"] == pytest.approx(4000 / result["median_ms"], rel=0.01)
        assert result["device"].startswith("cpu")
        assert (result["depthwise_impl"], result["batch_norm_impl"]) == ("shifted", "fused")  # 'auto' on CPU
        assert result["compiler_options"] == cpu_codegen.compiler_options()


def test_bench_flags_offer_every_implementation_the_model_config_accepts():
    from absl import flags

    from effnetx_jax.models import REMAT_MODES, layers

    bench = tool_module("bench")

    assert flags.FLAGS[bench._BATCH_NORM.name].parser.enum_values == list(layers.BATCH_NORM_IMPLS)
    assert flags.FLAGS[bench._REMAT.name].parser.enum_values == list(REMAT_MODES)


@pytest.mark.slow
def test_bench_families_with_a_latency_vs_flops_plot(tmp_path, capsys):
    plot = tmp_path / "latency_vs_flops.png"
    output = run_main(
        "bench",
        capsys,
        *("--family=efficientnet", "--family=efficientnet-x", "--sizes=0-1"),
        *("--resolution=32", "--batch=2", "--steps=1", "--warmup=0", "--json", f"--plot={plot}"),
    )
    *lines, wrote = output.splitlines()
    results = [json.loads(line) for line in lines]
    names = [(result["family"], result["name"]) for result in results]
    assert names == [
        ("efficientnet", "efficientnet-b0"),
        ("efficientnet", "efficientnet-b1"),
        ("efficientnet-x", "efficientnet-x-b0"),
        ("efficientnet-x", "efficientnet-x-b1"),
    ]
    # FLOPs are the analytic count at the measured resolution.
    x_b0 = architecture(model_config("efficientnet-x-b0"))
    assert results[2]["gflops"] == pytest.approx(2 * costs.total_macs(x_b0, 32) / 1e9, abs=1e-4)
    assert wrote == f"wrote {plot}" and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("sizes", ["0-9", "a-b", ""])
def test_bench_rejects_bad_sizes(sizes, capsys):
    assert error_line("bench", "--family=efficientnet", f"--sizes={sizes}").startswith("error: --sizes")


def test_bench_train_step_is_the_trainers_and_updates_every_part_of_the_state():
    cfg = model_config("efficientnet-x-b0")
    cfg.update(blocks=PLUMBING_BLOCKS, width=0.25, depth=1.0, resolution=32, num_classes=10, head_filters=64)
    config = speed._recipe_config(cfg, batch=4, remat="none")
    config.warmup_epochs = 0.0  # the recipe's first step has learning rate 0
    model, tx, step = speed._trainer_step(config)
    state = speed._train_state(tx, jax.jit(model.init)({"params": jax.random.key(1)}, jnp.zeros((1, 32, 32, 3))))
    before = jax.device_get(state)
    new_state, metrics = step(state, speed._train_batch(4, 32), jax.random.key(2))
    assert np.isfinite(float(metrics.compute()["loss"])) and int(new_state.step) == 1
    for part in ("params", "batch_stats", "opt_state", "ema_params", "ema_batch_stats"):
        changed = jax.tree_util.tree_leaves_with_path(
            jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != b)), getattr(new_state, part), getattr(before, part))
        )
        # A BatchNorm scale of 1 can keep its value: RMSprop's first step on it is below float32's resolution at 1.
        unchanged = [jax.tree_util.keystr(path) for path, value in changed if not value and "scale" not in str(path)]
        assert not unchanged, (part, unchanged)


def test_bench_weights_have_the_models_shapes_and_initial_scales():
    cfg = model_config("efficientnet-b0")
    model = create_model(cfg)
    image = jnp.zeros((1, 32, 32, 3), jnp.float32)
    variables = speed.random_variables(model, image)
    expected = jax.eval_shape(lambda x: model.init({"params": jax.random.key(0)}, x), image)
    assert jax.tree.map(lambda leaf: (leaf.shape, leaf.dtype), variables) == jax.tree.map(
        lambda leaf: (leaf.shape, leaf.dtype), expected
    )
    params, stats = variables["params"], variables["batch_stats"]
    assert np.std(params["head_conv"]["kernel"]) == pytest.approx(320**-0.5, rel=0.05)  # fan-in 1 * 1 * 320
    assert np.std(params["blocks_0"]["depthwise"]["kernel"]) == pytest.approx(9**-0.5, rel=0.3)  # 3 * 3 * 1
    assert np.all(params["stem_bn"]["scale"] == 1) and np.all(params["stem_bn"]["bias"] == 0)
    assert np.all(stats["stem_bn"]["var"] == 1) and np.all(stats["stem_bn"]["mean"] == 0)


# 16 channels < 5*5 pixels: the weights are gated, with either gradient; 32 channels: the activations are.
@pytest.mark.parametrize(("channels", "gradient"), [(16, "matmuls"), (16, "xla"), (32, "matmuls")])
def test_gated_projection_equals_a_conv_of_the_gated_tensor(channels, gradient, monkeypatch):
    monkeypatch.setattr(block_parts, "resolve_projection_grad", lambda: gradient)
    features = 8
    x = jax.random.normal(jax.random.key(0), (3, 5, 5, channels))
    gate = jax.nn.sigmoid(jax.random.normal(jax.random.key(1), (3, 1, 1, channels)))
    module = GatedProjection(features, jnp.float32)
    params = module.init(jax.random.key(2), x, gate)
    assert params["params"]["kernel"].shape == (1, 1, channels, features)
    weights = jax.random.normal(jax.random.key(3), (3, 5, 5, features))

    def conv_of_gated(params, x, gate):
        kernel = params["params"]["kernel"]
        return jax.lax.conv_general_dilated(
            x * gate, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    np.testing.assert_allclose(module.apply(params, x, gate), conv_of_gated(params, x, gate), rtol=1e-5, atol=1e-5)
    grads = jax.grad(lambda *args: jnp.sum(module.apply(*args) * weights), argnums=(0, 1, 2))(params, x, gate)
    expected_grads = jax.grad(lambda *args: jnp.sum(conv_of_gated(*args) * weights), argnums=(0, 1, 2))(params, x, gate)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
