"""Shared helpers: tiny models at 32 px so every test runs in seconds on 2 CPU cores, and readers of
what a training run writes."""

import json
import os
import pathlib
import socket
import sys

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from effnetx_jax.models import model_config

# One model that holds every block type: s2d (d1, then its d2 continuation ending at a stride-2 stage),
# fused, space-to-batch, conv type 1, MBConv with and without SE, ReLU and swish, skip and noskip.
EVERY_BLOCK = (
    "r1_k3_s11_e1_i32_o16_se0.25_d1_a0",
    "r2_k3_s22_e6_i16_o24_se0.25_f1_d2_a1",
    "r2_k3_s11_e4_i24_o24_b2_a1",
    "r1_k3_s22_e4_i24_o32_c1",
    "r2_k5_s11_e6_i32_o32_se0.25_a0_noskip",
    "r2_k3_s22_e6_i32_o40_se0.25",
)

# Two stages (s2d + depthwise, then fused): the base of the LACS and search tests, compiled in seconds.
TWO_STAGE_BLOCKS = ("r1_k3_s22_e1_i32_o16_se0.25_d1_a0", "r1_k3_s22_e4_i16_o24_f1_a1")


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


def train_command(data_dir, workdir, *overrides):
    """`python train.py` on a narrow quickstart model (run from the repository root); `overrides` are flags."""
    return [
        sys.executable,
        "train.py",
        "--config=configs/quickstart.py",
        f"--workdir={workdir}",
        f"--config.data_dir={data_dir}",
        "--config.model.width=0.25",
        "--config.model.depth=0.25",
        "--config.model.head_filters=64",
        "--config.batch_size=16",
        "--config.total_epochs=0",
        "--config.eval_every_epochs=0",
        "--config.checkpoint_every_epochs=0",
        *overrides,
    ]


def free_port() -> int:
    """A TCP port nobody listens on now, for a test's JAX coordinator."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_jsonl(workdir):
    return [json.loads(line) for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def checkpoint_steps(workdir):
    return sorted(int(name) for name in os.listdir(pathlib.Path(workdir) / "checkpoints") if name.isdigit())


def _state_checkpoints(workdir):
    return ocp.CheckpointManager(
        os.path.join(workdir, "checkpoints"), item_handlers={"state": ocp.StandardCheckpointHandler()}
    )


def checkpoint_metadata(workdir, step):
    """The array metadata (shape, dtype, sharding) of the checkpointed train state."""
    manager = _state_checkpoints(workdir)
    metadata = manager.item_metadata(step).state
    manager.close()
    return metadata


def checkpointed_state(workdir, step):
    """The checkpointed train state as host arrays, whatever device count wrote it."""
    manager = _state_checkpoints(workdir)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda meta: jax.ShapeDtypeStruct(meta.shape, meta.dtype, sharding=device), manager.item_metadata(step).state
    )
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    manager.close()
    return jax.device_get(restored.state)
