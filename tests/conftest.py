"""Shared helpers: tiny models at 32 px so every test runs in seconds on 2 CPU cores, and readers of
what a training run writes."""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]

# Set before JAX is imported, so that they hold in this process and in every process a test starts (they
# inherit the environment). The tests check behaviour, not speed: XLA's quick compile mode (compiling is
# most of a test's time on CPU, and the programs stay exact), and one persistent compilation cache, so a
# program compiled by one test or process is loaded by the next. The cache lives in the checkout's
# .pytest_cache and is kept between sessions; its keys are the programs themselves.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".pytest_cache" / "jax_compilation_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402
import pytest  # noqa: E402

from effnetx_jax.models import model_config  # noqa: E402

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


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> pathlib.Path:
    """A TFDS data dir holding the bundled digits dataset, built once for the whole session."""
    from effnetx_jax import data

    path = tmp_path_factory.mktemp("tfds")
    data.ensure_prepared("digits", str(path))
    return path


def init_variables(model, resolution=32, batch=2):
    images = jnp.zeros((batch, resolution, resolution, 3), jnp.float32)
    return jax.jit(lambda x: model.init({"params": jax.random.key(0)}, x))(images)


# Two blocks (s2d, then fused MBConv) between the stem and the head: the model of tests that check the
# plumbing around a model rather than its architecture. Its train step compiles in a third of the time
# of the quickstart's seven blocks at depth 0.25 (14 s against 47 s for a first 6-step run here).
PLUMBING_BLOCKS = ("r1_k3_s22_e1_i32_o16_se0.25_d1_a0", "r1_k3_s22_e4_i16_o24_f1_a1")

# The tests' training run: the quickstart shrunk to the plumbing model, a small batch and a few steps.
# Its learning-rate schedule does not depend on total_steps, so every run of this model, whatever its
# length and in whichever process, compiles to the same programs and the compilation cache serves them.
TINY_RUN = {
    "model.blocks": PLUMBING_BLOCKS,
    "model.width": 0.25,
    "model.depth": 1.0,
    "model.head_filters": 64,
    "batch_size": 16,
    "eval_batch_size": 64,
    "lr_schedule": "exponential",
}
# Its durations and intervals are given in steps.
IN_STEPS = {"total_epochs": 0.0, "eval_every_epochs": 0.0, "checkpoint_every_epochs": 0.0}


def tiny_run_config(data_dir, **overrides):
    """The tests' training run (`TINY_RUN`) as a config, 6 steps by default; `overrides` are dotted keys."""
    from configs import quickstart

    config = quickstart.get_config()
    config.data_dir = str(data_dir)
    defaults = {"total_steps": 6, "log_every_steps": 3, "eval_every_steps": 0, "checkpoint_every_steps": 3}
    config.update_from_flattened_dict({**TINY_RUN, **IN_STEPS, **defaults, **overrides})
    return config


def tiny_run_flags(data_dir, workdir) -> list[str]:
    """The flags of train.py and eval.py for the tests' training run (`TINY_RUN`) in `workdir`."""
    return [
        "--config=configs/quickstart.py",
        f"--workdir={workdir}",
        f"--config.data_dir={data_dir}",
        *(f"--config.{key}={value}" for key, value in TINY_RUN.items()),
    ]


def train_command(data_dir, workdir, *overrides):
    """`python train.py` on the tests' training run (run from the repository root); `overrides` are flags."""
    in_steps = (f"--config.{key}={value}" for key, value in IN_STEPS.items())
    return [sys.executable, "train.py", *tiny_run_flags(data_dir, workdir), *in_steps, *overrides]


@pytest.fixture(scope="session")
def finished_run(data_dir, tmp_path_factory) -> tuple[pathlib.Path, dict]:
    """The session's one finished 6-step tests' training run (`TINY_RUN`), evaluated and checkpointed at
    steps 3 and 6: its workdir and the metrics `train_and_evaluate` returned."""
    from effnetx_jax.train import train_and_evaluate

    workdir = tmp_path_factory.mktemp("trained_run")
    return workdir, train_and_evaluate(trained_run_config(data_dir), str(workdir))


def trained_run_config(data_dir, **overrides):
    """The config of `trained_run`; with `overrides` (dotted keys), the config of a run continuing it."""
    return tiny_run_config(data_dir, eval_every_steps=3, **overrides)


@pytest.fixture(scope="session")
def trained_run(finished_run) -> pathlib.Path:
    """The workdir of `finished_run`, shared by the tests that only read a workdir (they must not write to
    it: eval, predict, load); a test that writes to one takes `copy_of_trained_run`."""
    return finished_run[0]


@pytest.fixture
def copy_of_trained_run(trained_run, tmp_path) -> pathlib.Path:
    """A copy of `trained_run`'s workdir that the test may resume, refuse or damage."""
    return pathlib.Path(shutil.copytree(trained_run, tmp_path / "trained_run"))


class DeviceWorker:
    """A process with `devices` fake CPU devices running `train_and_evaluate` jobs (tests/device_worker.py).

    `train(config, workdir)` returns the worker's reply: `devices`, `metrics` or `error`, and `log`.
    """

    def __init__(self, devices: int, log_path):
        self.log_path = pathlib.Path(log_path)
        env = process_env(devices)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(REPO / "tests" / "device_worker.py")],
                cwd=REPO,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )

    def train(self, config, workdir, timeout_s: float = 600) -> dict:
        import pickle
        import select

        pickle.dump((config, str(workdir)), self.process.stdin)
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        try:
            assert ready, f"no reply within {timeout_s} s"
            return pickle.load(self.process.stdout)
        except (AssertionError, EOFError) as error:
            self.close()
            raise AssertionError(
                f"device worker: {error}; its log ends:\n{self.log_path.read_text()[-3000:]}"
            ) from None

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture(scope="session")
def devices(tmp_path_factory):
    """`devices(count)`: the session's DeviceWorker with `count` fake CPU devices, started on first use."""
    workers: dict[int, DeviceWorker] = {}

    def get(count: int) -> DeviceWorker:
        if count not in workers:
            workers[count] = DeviceWorker(count, tmp_path_factory.mktemp("device_worker") / f"{count}.log")
        return workers[count]

    yield get
    for worker in workers.values():
        worker.close()


def free_port() -> int:
    """A TCP port nobody listens on now, for a test's JAX coordinator."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_env(devices: int = 1, *, distributed: bool = False) -> dict[str, str]:
    """The environment of a process a test starts: JAX on the CPU with `devices` fake devices.

    `distributed` is for one process of a multi-process run (`--num_processes`): it compiles without the
    persistent cache. Its processes do not share cache entries (process 1 recompiles what process 0
    cached) and a pair started on a warm cache crashed XLA:CPU here (a segfault in process 0).
    """
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    if distributed:
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
    return env


def tool_process(module: str, *flags: str) -> subprocess.Popen:
    """`python -m module flags...` from the repository root on the CPU, with its output captured."""
    env = process_env(distributed=any(flag.startswith("--num_processes") for flag in flags))
    command = [sys.executable, "-m", module, *flags]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_to_end(processes: list[subprocess.Popen], timeout_s: float, with_stderr: bool = False) -> list:
    """Waits for every process (killing all on a timeout) and returns their stdouts (with `with_stderr`,
    (stdout, stderr) pairs); each must exit 0."""
    try:
        outputs = [process.communicate(timeout=timeout_s) for process in processes]
    finally:
        for process in processes:
            process.kill()
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    return outputs if with_stderr else [stdout for stdout, _ in outputs]


def kill_once_one_trial_finished_and_one_runs(worker: subprocess.Popen, workdir, name: str, timeout_s: float):
    """SIGKILLs a LACS or search worker while it trains its second trial, as a lost machine would.

    "Trains" means the running trial has its first heartbeat: the worker has finished choosing it.
    """
    from optuna.trial import TrialState

    from effnetx_jax.studies import lifecycle

    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if (pathlib.Path(workdir) / "optuna.journal").exists():
                trials = study_trials(workdir, name)
                training = [
                    t for t in trials if t.state == TrialState.RUNNING and lifecycle.HEARTBEAT_KEY in t.user_attrs
                ]
                if training and any(t.state == TrialState.COMPLETE for t in trials):
                    break
            assert worker.poll() is None, worker.communicate()[1][-3000:]
            time.sleep(0.5)
        worker.send_signal(signal.SIGKILL)
    finally:
        worker.kill()
        worker.communicate()


def study_trials(workdir, name: str, storage: str | None = None):
    """The trials of study `name` in the journal file of a LACS or search workdir, or at the `storage` URL
    (none before a worker created the study)."""
    import optuna

    from effnetx_jax.studies.storage import open_storage

    backend = open_storage(storage, str(workdir))
    try:
        return optuna.load_study(study_name=name, storage=backend).get_trials(deepcopy=False)
    except KeyError:  # optuna: "Record does not exist"
        return []
    finally:
        if storage:  # close its connection now, not whenever garbage collection gets to it
            backend.engine.dispose()


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
