"""The trainer end to end on the bundled digits dataset: tiny models, real TFDS/Grain/orbax/clu."""

import json
import pathlib
import signal
import socket
import subprocess
import time

import jax
import numpy as np
import pytest

from effnetx_jax.train import NonFiniteLossError, format_metrics, train_and_evaluate, workdir_lock

from conftest import (
    checkpoint_metadata,
    checkpoint_steps,
    checkpointed_state,
    read_jsonl,
    tiny_run_config,
    train_command,
    trained_run_config,
)

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_end_to_end_training_writes_metrics_config_and_checkpoints(finished_run):
    workdir, metrics = finished_run
    assert metrics["step"] == 6
    for key in ("train/loss", "train/lr", "train/img_per_s", "eval/loss", "eval/top1", "eval/top5", "eval/ema_top1"):
        assert np.isfinite(metrics[key]), key
    assert 0 <= metrics["eval/top1"] <= metrics["eval/top5"] <= 1
    lines = read_jsonl(workdir)
    assert [line["step"] for line in lines if "train/loss" in line] == [3, 6]
    assert [line["step"] for line in lines if "eval/top1" in line] == [3, 6]
    assert json.loads((workdir / "config.json").read_text())["model"]["resolution"] == 32
    assert checkpoint_steps(workdir) == [3, 6]
    assert format_metrics(metrics).startswith("step 6: ")


def test_rerun_of_a_finished_run_resumes_and_trains_further(data_dir, copy_of_trained_run):
    metrics = train_and_evaluate(trained_run_config(data_dir, total_steps=9), str(copy_of_trained_run))
    assert metrics["step"] == 9
    assert [line["step"] for line in read_jsonl(copy_of_trained_run) if "train/loss" in line] == [3, 6, 9]


def test_checkpoint_of_another_model_is_refused_naming_the_parameter(data_dir, copy_of_trained_run):
    other = trained_run_config(data_dir, total_steps=9)
    other.model.width = 0.5
    with pytest.raises(ValueError, match=r"written for another config: .*params/.* has shape"):
        train_and_evaluate(other, str(copy_of_trained_run))


@pytest.mark.slow
def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
    config = tiny_run_config(data_dir, total_steps=12, checkpoint_every_steps=1, log_every_steps=1, learning_rate=1e30)
    with pytest.raises(NonFiniteLossError, match=r"non-finite at step \d+") as stopped:
        train_and_evaluate(config, str(tmp_path))
    steps = checkpoint_steps(tmp_path)
    assert steps and steps[-1] < 12
    assert f"its last checkpoint, step {steps[-1]}, is kept" in str(stopped.value)
    assert all(
        np.isfinite(leaf).all() for leaf in jax.tree.leaves(checkpointed_state(str(tmp_path), steps[-1])["params"])
    )
    # Non-finite before the first checkpoint: the message says there is none.
    config.checkpoint_every_steps = 100
    with pytest.raises(NonFiniteLossError, match="no checkpoint was written before it, so there is none to resume"):
        train_and_evaluate(config, str(tmp_path / "fresh"))


def test_bad_durations_fail_before_training(data_dir, tmp_path):
    with pytest.raises(ValueError, match=r"config.total_steps: both total_steps=6 and total_epochs=2.0 are set"):
        train_and_evaluate(tiny_run_config(data_dir, total_epochs=2.0), str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def _run(command):
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run_bitwise(data_dir, tmp_path):
    args = ("--config.total_steps=60", "--config.checkpoint_every_steps=30", "--config.log_every_steps=10")
    # The uninterrupted run in this process: the same config as the flags, the same compiled programs.
    straight = tmp_path / "straight"
    train_and_evaluate(
        tiny_run_config(data_dir, total_steps=60, checkpoint_every_steps=30, log_every_steps=10), str(straight)
    )

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        train_command(data_dir, killed, *args), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 300
        while not (killed / "checkpoints" / "30").exists() and process.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "checkpoints" / "60").exists()
    _run(train_command(data_dir, killed, *args))

    for a, b in zip(
        jax.tree.leaves(checkpointed_state(str(straight), 60)["params"]),
        jax.tree.leaves(checkpointed_state(str(killed), 60)["params"]),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    last_eval = [line for line in read_jsonl(straight) if "eval/top1" in line][-1]
    assert [line for line in read_jsonl(killed) if "eval/top1" in line][-1] == last_eval


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly_and_meanwhile_a_second_run_is_refused(data_dir, tmp_path):
    command = train_command(data_dir, tmp_path, "--config.total_steps=100000", "--config.checkpoint_every_steps=0")
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not (tmp_path / "metrics.jsonl").exists() and process.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        config_json = (tmp_path / "config.json").read_bytes()
        # A second run on the same workdir (in this process: the command line's one-line error for a
        # refusal like this one is tested in test_cli.py).
        with pytest.raises(workdir_lock.WorkdirLocked) as refused:
            train_and_evaluate(tiny_run_config(data_dir, total_steps=100000), str(tmp_path))
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0, stderr[-3000:]
    steps = checkpoint_steps(tmp_path)
    assert len(steps) == 1 and 0 < steps[0] < 100000
    # The second run stopped at start naming the first, and wrote nothing.
    assert str(refused.value).startswith(
        f"workdir {tmp_path} is in use: held by process {process.pid} on {socket.gethostname()}"
    )
    assert (tmp_path / "config.json").read_bytes() == config_json
    assert not (tmp_path / workdir_lock.LOCK_FILE).exists()  # released by the first on its way out


# --- several devices: 1 in this process, 2 and 8 in the session's device workers --------------------------


@pytest.fixture(scope="module")
def device_runs(data_dir, devices, tmp_path_factory):
    """`run(count, **overrides)`: a 2-step run on `count` devices, `{"devices", "metrics" or "error", "workdir"}`.

    Each distinct run happens once per module; the tests that compare it with others share it.
    """
    done = {}

    def run(count: int, **overrides) -> dict:
        key = (count, tuple(sorted(overrides.items())))
        if key not in done:
            workdir = tmp_path_factory.mktemp(f"devices{count}")
            config = tiny_run_config(data_dir, total_steps=2, log_every_steps=1, checkpoint_every_steps=2, **overrides)
            if count == jax.device_count():
                reply = {"devices": count, "metrics": train_and_evaluate(config, str(workdir))}
            else:
                reply = devices(count).train(config, workdir)
            done[key] = {**reply, "workdir": workdir}
        return done[key]

    return run


def _trained(reply: dict) -> dict:
    assert "error" not in reply, reply["error"]
    return reply["metrics"]


@pytest.mark.slow
def test_eight_fake_devices_train_like_one_device(device_runs):
    one, eight = device_runs(1), device_runs(8)
    one_metrics, eight_metrics = _trained(one), _trained(eight)
    assert (one["devices"], eight["devices"]) == (1, 8)
    # Same global batch: BatchNorm statistics over the global batch make the runs agree to float
    # tolerance (per-device statistics over 2 images each would differ by O(1)). The first step
    # updates only BN statistics (the warm-up learning rate starts at 0); the second moves the weights.
    one_state, eight_state = checkpointed_state(one["workdir"], 2), checkpointed_state(eight["workdir"], 2)
    for a, b in zip(
        jax.tree.leaves(one_state["batch_stats"]), jax.tree.leaves(eight_state["batch_stats"]), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(jax.tree.leaves(one_state["params"]), jax.tree.leaves(eight_state["params"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    assert eight_metrics["train/loss"] == pytest.approx(one_metrics["train/loss"], rel=1e-5)


@pytest.mark.slow
def test_fsdp_shards_the_state_and_trains_like_replicated(device_runs):
    replicated, fsdp = device_runs(8), device_runs(8, fsdp_size=4)
    replicated_metrics, fsdp_metrics = _trained(replicated), _trained(fsdp)
    for key in ("train/loss", "eval/loss", "eval/ema_loss"):
        assert fsdp_metrics[key] == pytest.approx(replicated_metrics[key], rel=1e-5), key
    replicated_state, fsdp_state = (checkpointed_state(run["workdir"], 2) for run in (replicated, fsdp))
    for a, b in zip(jax.tree.leaves(replicated_state), jax.tree.leaves(fsdp_state), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The checkpoint records how each array was laid out: the large ones over the fsdp axis.
    layouts = {
        name: [tuple(leaf.sharding.partition_spec) for leaf in jax.tree.leaves(checkpoint_metadata(run["workdir"], 2))]
        for name, run in (("replicated", replicated), ("fsdp", fsdp))
    }
    assert not any("fsdp" in spec for spec in layouts["replicated"])
    sharded = sum("fsdp" in spec for spec in layouts["fsdp"])
    assert 0 < sharded < len(layouts["fsdp"])


@pytest.mark.slow
def test_grouped_batch_norm_depends_on_the_images_per_group_not_the_devices(device_runs):
    # 16 images in 2 BatchNorm groups of 8 either way: 8 devices in groups of 4, or 2 devices alone.
    runs = {
        "8x4": device_runs(8, bn_group_size=4),
        "2x1": device_runs(2, bn_group_size=1),
        "global": device_runs(2),
    }
    for run in runs.values():
        _trained(run)
    stats = {name: jax.tree.leaves(checkpointed_state(run["workdir"], 2)["batch_stats"]) for name, run in runs.items()}
    for a, b in zip(stats["8x4"], stats["2x1"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    largest_gap = max(float(np.max(np.abs(a - b))) for a, b in zip(stats["8x4"], stats["global"], strict=True))
    assert largest_gap > 1e-3  # the groups really normalise with their own statistics


@pytest.mark.slow
def test_bn_group_size_must_divide_the_devices(device_runs):
    assert "config.bn_group_size: bn_group_size=3 must be 0" in device_runs(8, bn_group_size=3)["error"]


@pytest.mark.slow
def test_batch_not_divisible_by_devices_is_a_clear_error(device_runs):
    assert (
        "config.batch_size: batch_size=12 is not divisible by the 8 devices" in device_runs(8, batch_size=12)["error"]
    )
