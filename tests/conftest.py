"""Shared helpers: tiny models at 32 px so every test runs in seconds on 2 CPU cores."""

import jax
import jax.numpy as jnp
import pytest

from effnetx_jax.models import create_model, model_config


def tiny_config(blocks, *, activation="relu", width=0.25, se_coefficient=1.0, **overrides):
    cfg = model_config("efficientnet-x-b0")
    cfg.update(
        name="tiny",
        blocks=tuple(blocks),
        activation=activation,
        width=width,
        depth=1.0,
        resolution=32,
        num_classes=10,
        head_filters=64,
        se_coefficient=se_coefficient,
        **overrides,
    )
    return cfg


def init_variables(model, resolution=32, batch=2):
    images = jnp.zeros((batch, resolution, resolution, 3), jnp.float32)
    return jax.jit(lambda x: model.init({"params": jax.random.key(0)}, x))(images)


@pytest.fixture
def tiny_x_config():
    return tiny_config(model_config("efficientnet-x-b0").blocks)


@pytest.fixture
def build():
    def _build(cfg):
        model = create_model(cfg)
        return model, init_variables(model, cfg.resolution)

    return _build
