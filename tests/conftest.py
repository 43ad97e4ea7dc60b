"""Shared helpers: tiny models at 32 px so every test runs in seconds on 2 CPU cores, and readers of
what a training run writes."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from effnetx_jax.models import model_config

REPO = pathlib.Path(__file__).resolve().parents[1]

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


def narrow_quickstart_flags(data_dir, workdir) -> list[str]:
    """The flags of train.py and eval.py for the quickstart config with a narrow model, in `workdir`."""
    return [
        "--config=configs/quickstart.py",
        f"--workdir={workdir}",
        f"--config.data_dir={data_dir}",
        "--config.model.width=0.25",
        "--config.model.depth=0.25",
        "--config.model.head_filters=64",
    ]


def train_command(data_dir, workdir, *overrides):
    """`python train.py` on a narrow quickstart model (run from the repository root); `overrides` are flags."""
    return [
        sys.executable,
        "train.py",
        *narrow_quickstart_flags(data_dir, workdir),
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


def tool_process(module: str, *flags: str) -> subprocess.Popen:
    """`python -m module flags...` from the repository root on the CPU, with its output captured."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-m", module, *flags]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_to_end(processes: list[subprocess.Popen], timeout_s: float) -> list[str]:
    """Waits for every process (killing all on a timeout) and returns their stdouts; each must exit 0."""
    try:
        outputs = [process.communicate(timeout=timeout_s) for process in processes]
    finally:
        for process in processes:
            process.kill()
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    return [stdout for stdout, _ in outputs]


def kill_once_one_trial_finished_and_one_runs(worker: subprocess.Popen, workdir, name: str, timeout_s: float):
    """SIGKILLs a LACS or search worker while it trains its second trial, as a lost machine would.

    "Trains" means the running trial has its first heartbeat: the worker has finished choosing it.
    """
    from optuna.trial import TrialState

    from effnetx_jax import studies

    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if (pathlib.Path(workdir) / "optuna.journal").exists():
                trials = study_trials(workdir, name)
                training = [
                    t for t in trials if t.state == TrialState.RUNNING and studies.HEARTBEAT_KEY in t.user_attrs
                ]
                if training and any(t.state == TrialState.COMPLETE for t in trials):
                    break
            assert worker.poll() is None, worker.communicate()[1][-3000:]
            time.sleep(0.5)
        worker.send_signal(signal.SIGKILL)
    finally:
        worker.kill()
        worker.communicate()


def study_trials(workdir, name: str):
    """The trials of study `name` in the journal file of a LACS or search workdir."""
    import optuna

    from effnetx_jax import studies

    storage = studies.open_storage(None, str(workdir))
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


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
