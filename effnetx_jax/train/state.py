"""The training state and its sharded creation (shapes first, then shardings, then a jitted init)."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from effnetx_jax.train.sharding import state_shardings


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: optax.OptState
    ema_params: Any
    ema_batch_stats: Any
    # The first step whose loss was not finite, -1 while all were; such a step leaves the state as
    # it was, so the last good values can still be checkpointed and the host can name the step.
    nonfinite_step: jax.Array


def create_train_state(model, tx: optax.GradientTransformation, rng: jax.Array, image_shape, mesh: Mesh):
    """Returns the initial state, created directly with its shardings, and those shardings."""

    def init(rng):
        variables = model.init({"params": rng}, jnp.zeros((1, *image_shape), jnp.float32))
        params, batch_stats = variables["params"], variables["batch_stats"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=batch_stats,
            opt_state=tx.init(params),
            ema_params=params,
            ema_batch_stats=batch_stats,
            nonfinite_step=jnp.full((), -1, jnp.int32),
        )

    shardings = state_shardings(jax.eval_shape(init, rng), mesh)
    return jax.jit(init, out_shardings=shardings)(rng), shardings
