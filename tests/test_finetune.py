"""Starting from pretrained weights: configs/finetune.py with `init_from` and a new classifier, the resume
order (workdir checkpoint, then init_from, then scratch), refusals before anything is compiled, and
eval.py on a converted checkpoint."""

import subprocess
import sys

import jax
import numpy as np
import pytest

import effnetx_jax
from configs import finetune
from effnetx_jax import data, weights
from effnetx_jax.models import create_model
from effnetx_jax.train import evaluate_checkpoint, train_and_evaluate
from effnetx_jax.train.steps import normalize

from conftest import PLUMBING_BLOCKS, REPO, init_variables, tiny_run_config


def narrow(config, data_dir, num_classes=10):
    """configs/finetune.py's EfficientNet-B0 cut to the plumbing model to run in seconds at 32 px on digits."""
    config.data_dir = str(data_dir)
    config.model.update(blocks=PLUMBING_BLOCKS, width=0.25, depth=1.0, head_filters=64, resolution=32)
    config.model.num_classes = num_classes
    config.update(batch_size=16, total_epochs=0.0, total_steps=2, eval_every_epochs=0.0, checkpoint_every_epochs=0.0)
    return config


def converted_checkpoint(directory, config) -> dict:
    """A converted checkpoint of `config`'s model with random weights (BatchNorm values moved off 0 and 1)."""
    rng = np.random.default_rng(0)
    variables = jax.tree.map(
        lambda leaf: np.asarray(leaf) + rng.normal(0, 0.1, leaf.shape).astype(np.float32),
        init_variables(create_model(config.model)),
    )
    weights.save_converted(str(directory), config, variables, {"source": "random", "format": "test"})
    return variables


@pytest.fixture(scope="module")
def imagenet_head_checkpoint(data_dir, tmp_path_factory):
    """Converted weights of the narrow B0 with a 1000-class classifier, as published checkpoints have."""
    directory = tmp_path_factory.mktemp("pretrained") / "efficientnet-b0"
    return directory, converted_checkpoint(directory, narrow(finetune.get_config(), data_dir, num_classes=1000))


def flat(tree) -> dict:
    return {
        jax.tree_util.keystr(path, simple=True, separator="/"): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


@pytest.mark.slow
def test_finetune_loads_every_weight_but_the_classifier_then_resumes_from_the_workdir(
    imagenet_head_checkpoint, data_dir, tmp_path
):
    directory, pretrained = imagenet_head_checkpoint
    config = narrow(finetune.get_config(), data_dir)
    config.init_from = str(directory)
    config.learning_rate = 0.0  # the weights stay where they were loaded
    assert train_and_evaluate(config, str(tmp_path))["step"] == 2

    for field in ("raw", "ema"):
        trained = flat(weights.read_variables(str(tmp_path), weights=field)["params"])
        for key, value in flat(pretrained["params"]).items():
            if key.startswith("classifier"):
                assert trained[key].shape[-1] == 10  # a new, freshly initialised 10-class head
            else:
                np.testing.assert_array_equal(trained[key], value, err_msg=key)

    # effnetx_jax.load reads the workdir's EMA weights into the model of its config.json.
    model, variables = effnetx_jax.load(str(tmp_path))
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    expected = create_model(config.model).apply(weights.read_variables(str(tmp_path)), images, train=False)
    np.testing.assert_allclose(model.apply(variables, images, train=False), expected, rtol=1e-6, atol=1e-6)

    # A checkpoint in the workdir comes first: init_from is not even read.
    config.init_from, config.total_steps = str(tmp_path / "no-such-directory"), 3
    assert train_and_evaluate(config, str(tmp_path))["step"] == 3


def test_init_from_refuses_mismatching_shapes_before_training_and_names_init_exclude(
    imagenet_head_checkpoint, data_dir, tmp_path
):
    directory, _ = imagenet_head_checkpoint
    config = narrow(finetune.get_config(), data_dir)
    config.init_from, config.init_exclude = str(directory), ""
    with pytest.raises(ValueError, match=r"params/classifier/bias has shape \[1000\] .* but \[10\] .*init_exclude"):
        train_and_evaluate(config, str(tmp_path))
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())
    config.init_exclude = "("
    with pytest.raises(ValueError, match=r"config.init_exclude: '\(' is not a regular expression"):
        train_and_evaluate(config, str(tmp_path))
    config.init_exclude, config.init_from = "classifier", str(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"config\.init_from: .*missing' is not a directory"):
        train_and_evaluate(config, str(tmp_path))


@pytest.fixture(scope="module")
def converted_digits_checkpoint(data_dir, tmp_path_factory):
    """A converted checkpoint of the tests' training run model (`TINY_RUN`), its config and variables."""
    directory = tmp_path_factory.mktemp("converted") / "converted"
    config = tiny_run_config(data_dir)
    return directory, config, converted_checkpoint(directory, config)


def test_eval_on_a_converted_checkpoint_uses_its_config(converted_digits_checkpoint):
    directory, config, variables = converted_digits_checkpoint
    result = evaluate_checkpoint(weights.read_config(str(directory)), str(directory))

    # The same numbers, computed here from the eval batches and the model directly.
    model, correct, count = create_model(config.model), 0.0, 0.0
    for batch in data.eval_batches(config, process_index=0, process_count=1):
        logits = model.apply(variables, normalize(batch["image"], config), train=False)
        correct += float(np.sum((np.argmax(logits, -1) == batch["label"]) * batch["mask"]))
        count += float(np.sum(batch["mask"]))
    assert result["step"] is None and result["num_examples"] == count
    assert result["top1"] == pytest.approx(correct / count, abs=1e-6)

    with pytest.raises(ValueError, match="converted checkpoint: it holds one set of weights"):
        evaluate_checkpoint(config, str(directory), weights="raw")


@pytest.mark.slow
def test_eval_py_on_a_converted_checkpoint_prints_its_top1(converted_digits_checkpoint):
    directory, _, _ = converted_digits_checkpoint
    result = evaluate_checkpoint(weights.read_config(str(directory)), str(directory))
    printed = subprocess.run(
        [sys.executable, "eval.py", f"--workdir={directory}"],  # the config stored with the weights
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert f"converted weights on digits test: top1={result['top1']:.4f}" in printed.stdout
