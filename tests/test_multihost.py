"""Real multi-process JAX: two `train.py` processes over loopback (gloo collectives), one CPU device each."""

import contextlib
import pathlib
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from effnetx_jax.train import distributed

from conftest import (
    checkpoint_steps,
    checkpointed_state,
    free_port,
    process_env,
    read_jsonl,
    tiny_run_config,
    train_command,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
PROCESS_TIMEOUT_S = 300


# train.py logging every step and checkpointing every 2, in one process per process.
QUICK = {"log_every_steps": 1, "checkpoint_every_steps": 2, "data.num_workers": 0}


def _command(workdir, data_dir, *extra):
    return train_command(data_dir, workdir, *(f"--config.{key}={value}" for key, value in QUICK.items()), *extra)


@contextlib.contextmanager
def _two_processes(workdir, data_dir, *extra):
    """Starts process 0 and 1 of one run; yields the Popen objects and always kills what is left."""
    port = free_port()
    processes = []
    try:
        for process_id in range(2):
            flags = (f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={process_id}")
            processes.append(
                subprocess.Popen(
                    _command(workdir, data_dir, *flags, "--distributed_timeout_s=120", *extra),
                    cwd=REPO,
                    env=process_env(distributed=True),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.communicate()


def _finish(processes) -> list[tuple[int, str, str]]:
    """Waits for every process; (returncode, stdout, stderr) of each."""
    outputs = [process.communicate(timeout=PROCESS_TIMEOUT_S) for process in processes]
    return [(process.returncode, *output) for process, output in zip(processes, outputs, strict=True)]


@pytest.mark.slow
def test_two_processes_train_like_one_process_and_resume_in_one(data_dir, devices, tmp_path):
    # The reference: one process with 2 devices (the session's device worker), the same config as the flags.
    single = devices(2).train(
        tiny_run_config(data_dir, total_steps=4, eval_every_steps=4, **QUICK), tmp_path / "single"
    )
    assert "error" not in single, single["error"]
    with _two_processes(tmp_path / "pair", data_dir, "--config.total_steps=4", "--config.eval_every_steps=4") as pair:
        results = _finish(pair)
    for returncode, _, stderr in results:
        assert returncode == 0, stderr[-3000:]

    # Same global batches, same loss trajectory and evaluation, to float32 tolerance.
    single_log, pair_log = read_jsonl(tmp_path / "single"), read_jsonl(tmp_path / "pair")
    assert [entry["step"] for entry in pair_log] == [entry["step"] for entry in single_log]
    for expected, got in zip(single_log, pair_log, strict=True):
        for key in ("train/loss", "train/cross_entropy", "eval/loss", "eval/top1", "eval/ema_loss"):
            if key in expected:
                assert got[key] == pytest.approx(expected[key], rel=1e-5), (expected["step"], key)
    single_state, pair_state = checkpointed_state(tmp_path / "single", 4), checkpointed_state(tmp_path / "pair", 4)
    for a, b in zip(jax.tree.leaves(single_state["params"]), jax.tree.leaves(pair_state["params"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Both processes report the same final evaluation; only process 0 wrote metrics.jsonl.
    final_lines = [stdout.splitlines()[-1] for _, stdout, _ in results]
    assert [line.split(" train/")[0] for line in final_lines] == [final_lines[0].split(" train/")[0]] * 2
    assert len(pair_log) == 5

    # Both runs continue to step 6 in one process: the two-process checkpoint restores there with the
    # input position recomputed from the step, and the runs stay equal.
    for name in ("single", "pair"):
        resumed = devices(2).train(
            tiny_run_config(data_dir, total_steps=6, eval_every_steps=6, **QUICK), tmp_path / name
        )
        assert "error" not in resumed, resumed["error"]
    assert any("input position is recomputed from the step" in line for line in resumed["log"])
    single_state, pair_state = checkpointed_state(tmp_path / "single", 6), checkpointed_state(tmp_path / "pair", 6)
    for a, b in zip(jax.tree.leaves(single_state["params"]), jax.tree.leaves(pair_state["params"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_killed_process_stops_the_run_and_both_resume(data_dir, tmp_path):
    workdir = tmp_path / "run"
    with _two_processes(workdir, data_dir, "--config.total_steps=500", "--heartbeat_timeout_s=10") as pair:
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        while not (workdir / "checkpoints" / "2").is_dir() and time.monotonic() < deadline:
            assert pair[0].poll() is None, pair[0].communicate()[1][-3000:]
            time.sleep(0.2)
        pair[1].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        _, stderr = pair[0].communicate(timeout=120)
        assert pair[0].returncode != 0
        assert time.monotonic() - killed_at < 60
    assert "another process failed or was killed" in stderr

    resumed_from = checkpoint_steps(workdir)[-1]
    assert resumed_from >= 2
    finish_at = f"--config.total_steps={resumed_from + 2}"
    with _two_processes(workdir, data_dir, finish_at) as pair:
        results = _finish(pair)
    for returncode, stdout, stderr in results:
        assert returncode == 0, stderr[-3000:]
        assert f"Resuming from the checkpoint at step {resumed_from}" in stderr
        assert stdout.splitlines()[-1].startswith(f"step {resumed_from + 2}:")
    assert checkpoint_steps(workdir)[-1] == resumed_from + 2


@pytest.mark.slow
def test_sigterm_to_every_process_saves_one_checkpoint_at_a_common_step(data_dir, tmp_path):
    workdir = tmp_path / "run"
    with _two_processes(workdir, data_dir, "--config.total_steps=500", "--config.checkpoint_every_steps=100") as pair:
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        while not (workdir / "metrics.jsonl").exists() or len(read_jsonl(workdir)) < 3:
            assert pair[0].poll() is None and time.monotonic() < deadline, pair[0].communicate()[1][-3000:]
            time.sleep(0.2)
        for process in pair:
            process.send_signal(signal.SIGTERM)
        results = _finish(pair)
    for returncode, stdout, stderr in results:
        assert returncode == 0, stderr[-3000:]
        assert "preempted=1" in stdout.splitlines()[-1]
    # JAX's preemption sync manager picked one step for both processes, and the checkpoint holds it.
    (step,) = checkpoint_steps(workdir)
    assert all(stdout.splitlines()[-1].startswith(f"step {step}:") for _, stdout, _ in results)


@pytest.mark.slow
def test_processes_with_different_configs_fail_clearly(data_dir, tmp_path):
    port = free_port()
    processes = [
        subprocess.Popen(
            _command(
                tmp_path,
                data_dir,
                f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={process_id}",
                f"--config.seed={process_id}",
                "--config.total_steps=2",
            ),
            cwd=REPO,
            env=process_env(distributed=True),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for process_id in range(2)
    ]
    try:
        results = _finish(processes)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for returncode, _, stderr in results:
        assert returncode != 0
        assert "processes [1] run a different config from process 0" in stderr


def test_an_unreachable_coordinator_is_a_clear_error_within_the_timeout():
    port = free_port()
    started = time.monotonic()
    with pytest.raises(ConnectionError, match=rf"process 1 of 2 could not reach the coordinator at 127.0.0.1:{port}"):
        distributed.initialize(f"127.0.0.1:{port}", 2, 1, timeout_s=2)
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (("127.0.0.1:1234", None, 0), r"--num_processes \(or JAX_NUM_PROCESSES\) missing"),
        (("127.0.0.1:1234", 2, 2), r"process_id 2 is not in \[0, num_processes=2\)"),
        (("localhost", 2, 1), r"coordinator address 'localhost' is not HOST:PORT"),
    ],
)
def test_bad_distributed_settings_are_named(settings, message, monkeypatch):
    for variable in distributed.ENVIRONMENT_VARIABLES.values():
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ValueError, match=message):
        distributed.initialize(*settings, timeout_s=1)


def test_settings_come_from_the_environment_and_clusters_are_detected(monkeypatch):
    for variable in distributed.ENVIRONMENT_VARIABLES.values():
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "1")
    monkeypatch.setenv("JAX_PROCESS_ID", "0")
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1234")
    distributed.initialize()  # one process from the environment: nothing to start
    assert jax.process_count() == 1
    for variable in ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID"):
        monkeypatch.setenv(variable, "0")
    assert distributed.detected_cluster() == "SlurmCluster"
