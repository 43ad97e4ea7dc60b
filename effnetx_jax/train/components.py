"""What training and evaluation build alike from a config: the checks that must fail first, then the
durations, mesh and shardings, model, optimizer and the train state's shapes."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from effnetx_jax import data, recipe
from effnetx_jax.models import create_model
from effnetx_jax.train import multihost, optim, sharding
from effnetx_jax.train.plan import Plan, bn_groups, check_config, make_plan
from effnetx_jax.train.state import create_train_state


@dataclasses.dataclass(frozen=True)
class Components:
    config: Any
    info: data.DatasetInfo
    plan: Plan
    mesh: Mesh
    batch_sharding: NamedSharding
    replicated: NamedSharding
    model: Any
    tx: optax.GradientTransformation
    schedule: optax.Schedule

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.config.model.resolution, self.config.model.resolution, 3)

    def global_batch(self, local_batch: dict) -> dict:
        """One global array per key from this process's part of the batch."""
        return {
            key: jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(value))
            for key, value in local_batch.items()
        }

    def abstract_batch(self) -> dict:
        """Shapes, dtypes and shardings of a global training batch, to compile the train step ahead of it."""
        one = data.empty_batch(1, self.image_shape)
        return {
            key: jax.ShapeDtypeStruct(
                (self.config.batch_size, *value.shape[1:]), value.dtype, sharding=self.batch_sharding
            )
            for key, value in one.items()
        }

    def abstract_state(self):
        """Shapes, dtypes and shardings of the train state, computing nothing: a target to restore into."""
        shapes = jax.eval_shape(
            lambda rng: create_train_state(self.model, self.tx, rng, self.image_shape, self.mesh)[0], jax.random.key(0)
        )
        return jax.tree.map(
            lambda leaf, leaf_sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf_sharding),
            shapes,
            sharding.state_shardings(shapes, self.mesh),
        )


def build_components(config) -> Components:
    """Checks `config` (raising `UserError` naming the key) before anything is compiled, then builds."""
    config = recipe.with_added_keys(config)
    info = data.dataset_info(config)  # prepares the bundled digits dataset on first use
    check_config(config, info.num_classes)
    multihost.check_same_config(config)
    plan = make_plan(config, info.num_train)
    mesh = sharding.make_mesh(config.fsdp_size)
    tx, schedule = optim.create_optimizer(config, plan.steps_per_epoch, plan.total_steps)
    return Components(
        config=config,
        info=info,
        plan=plan,
        mesh=mesh,
        batch_sharding=sharding.batch_sharding(mesh),
        replicated=sharding.replicated(mesh),
        model=create_model(config.model, bn_groups=bn_groups(config), remat=config.remat),
        tx=tx,
        schedule=schedule,
    )
