"""A workdir written by an earlier version (tests/data/workdir_v0) still loads to the same logits,
evaluates and resumes: the variable names and the checkpoint layout are a contract with users' runs."""

import pathlib
import shutil

import jax
import numpy as np
import pytest

import effnetx_jax
from effnetx_jax import weights
from effnetx_jax.train import evaluate_checkpoint, train_and_evaluate

OLD_WORKDIR = pathlib.Path(__file__).parent / "data" / "workdir_v0"


@pytest.fixture
def old_workdir(tmp_path) -> pathlib.Path:
    return pathlib.Path(shutil.copytree(OLD_WORKDIR, tmp_path / "workdir_v0"))


def test_an_earlier_workdir_loads_to_the_logits_it_gave_then(old_workdir):
    model, variables = effnetx_jax.load(str(old_workdir))
    images = np.asarray(jax.random.uniform(jax.random.key(0), (2, 32, 32, 3)), np.float32)
    logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
    np.testing.assert_allclose(logits, np.load(old_workdir / "logits_of_uniform_key0.npy"), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_an_earlier_workdir_evaluates_and_resumes(old_workdir, data_dir):
    config = weights.read_config(str(old_workdir))
    config.data_dir = str(data_dir)
    assert evaluate_checkpoint(config, str(old_workdir))["step"] == 2
    config.total_steps = 3
    assert train_and_evaluate(config, str(old_workdir))["step"] == 3
