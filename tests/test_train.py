"""The trainer end to end on the bundled digits dataset: tiny models, real TFDS/Grain/orbax/clu."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import quickstart
from effnetx_jax.train import NonFiniteLossError, format_metrics, train_and_evaluate

from conftest import checkpoint_metadata, checkpoint_steps, checkpointed_state, read_jsonl, train_command

REPO = pathlib.Path(__file__).resolve().parents[1]


def tiny_config(data_dir, **overrides):
    """The quickstart, shrunk: a few steps of a narrow EfficientNet-X at 32 px."""
    config = quickstart.get_config()
    config.data_dir = str(data_dir)
    config.model.update(width=0.25, depth=0.25, head_filters=64)
    config.update(
        total_epochs=0.0,
        total_steps=6,
        batch_size=16,
        eval_batch_size=64,
        log_every_steps=3,
        eval_every_epochs=0.0,
        eval_every_steps=0,
        checkpoint_every_epochs=0.0,
        checkpoint_every_steps=3,
    )
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


def test_end_to_end_training_writes_metrics_config_and_checkpoints(data_dir, tmp_path):
    metrics = train_and_evaluate(tiny_config(data_dir), str(tmp_path))
    assert metrics["step"] == 6
    for key in ("train/loss", "train/lr", "train/img_per_s", "eval/loss", "eval/top1", "eval/top5", "eval/ema_top1"):
        assert np.isfinite(metrics[key]), key
    assert 0 <= metrics["eval/top1"] <= metrics["eval/top5"] <= 1
    lines = read_jsonl(tmp_path)
    assert [line["step"] for line in lines if "train/loss" in line] == [3, 6]
    assert [line["step"] for line in lines if "eval/top1" in line] == [6]
    assert json.loads((tmp_path / "config.json").read_text())["model"]["resolution"] == 32
    assert checkpoint_steps(tmp_path) == [3, 6]
    assert format_metrics(metrics).startswith("step 6: ")


def test_rerun_of_a_finished_run_resumes_and_trains_further(data_dir, tmp_path):
    train_and_evaluate(tiny_config(data_dir), str(tmp_path))
    metrics = train_and_evaluate(tiny_config(data_dir, total_steps=9), str(tmp_path))
    assert metrics["step"] == 9
    assert [line["step"] for line in read_jsonl(tmp_path) if "train/loss" in line] == [3, 6, 9]


def test_checkpoint_of_another_model_is_refused_naming_the_parameter(data_dir, tmp_path):
    train_and_evaluate(tiny_config(data_dir, total_steps=3), str(tmp_path))
    other = tiny_config(data_dir, total_steps=6)
    other.model.width = 0.5
    with pytest.raises(ValueError, match=r"written for another config: .*params/.* has shape"):
        train_and_evaluate(other, str(tmp_path))


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
    config = tiny_config(data_dir, total_steps=12, checkpoint_every_steps=1, log_every_steps=1, learning_rate=1e30)
    with pytest.raises(NonFiniteLossError, match=r"non-finite at step \d+"):
        train_and_evaluate(config, str(tmp_path))
    steps = checkpoint_steps(tmp_path)
    assert steps and steps[-1] < 12
    assert all(
        np.isfinite(leaf).all() for leaf in jax.tree.leaves(checkpointed_state(str(tmp_path), steps[-1])["params"])
    )


def test_bad_durations_fail_before_training(data_dir, tmp_path):
    with pytest.raises(ValueError, match=r"config.total_steps: both total_steps=6 and total_epochs=2.0 are set"):
        train_and_evaluate(tiny_config(data_dir, total_epochs=2.0), str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def _run(command):
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_resume_after_sigkill_matches_an_uninterrupted_run_bitwise(data_dir, tmp_path):
    args = ("--config.total_steps=60", "--config.checkpoint_every_steps=30", "--config.log_every_steps=10")
    straight = tmp_path / "straight"
    _run(train_command(data_dir, straight, *args))

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


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(data_dir, tmp_path):
    command = train_command(data_dir, tmp_path, "--config.total_steps=100000", "--config.checkpoint_every_steps=0")
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not (tmp_path / "metrics.jsonl").exists() and process.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0, stderr[-3000:]
    steps = checkpoint_steps(tmp_path)
    assert len(steps) == 1 and 0 < steps[0] < 100000


EIGHT_DEVICES = """
import json, sys
import jax
from configs import quickstart
from effnetx_jax.train import train_and_evaluate
config = quickstart.get_config()
config.data_dir = sys.argv[1]
config.model.update(width=0.25, depth=0.25, head_filters=64)
config.update(total_epochs=0.0, total_steps=2, log_every_steps=1, eval_every_epochs=0.0,
              checkpoint_every_epochs=0.0, checkpoint_every_steps=2)
config.batch_size, config.bn_group_size, config.fsdp_size = map(int, sys.argv[3:6])
metrics = train_and_evaluate(config, sys.argv[2])
print(json.dumps({"devices": jax.device_count(), **metrics}))
"""


def _run_on_devices(count, data_dir, workdir, batch_size=16, bn_group_size=0, fsdp_size=1):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={count}", "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            EIGHT_DEVICES,
            str(data_dir),
            str(workdir),
            str(batch_size),
            str(bn_group_size),
            str(fsdp_size),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_eight_fake_devices_train_like_one_device(data_dir, tmp_path):
    one = _run_on_devices(1, data_dir, tmp_path / "one")
    eight = _run_on_devices(8, data_dir, tmp_path / "eight")
    assert one.returncode == 0 and eight.returncode == 0, (one.stderr + eight.stderr)[-3000:]
    one_metrics, eight_metrics = json.loads(one.stdout.splitlines()[-1]), json.loads(eight.stdout.splitlines()[-1])
    assert (one_metrics["devices"], eight_metrics["devices"]) == (1, 8)
    # Same global batch: BatchNorm statistics over the global batch make the runs agree to float
    # tolerance (per-device statistics over 2 images each would differ by O(1)). The first step
    # updates only BN statistics (the warm-up learning rate starts at 0); the second moves the weights.
    one_state, eight_state = (
        checkpointed_state(str(tmp_path / "one"), 2),
        checkpointed_state(str(tmp_path / "eight"), 2),
    )
    for a, b in zip(
        jax.tree.leaves(one_state["batch_stats"]), jax.tree.leaves(eight_state["batch_stats"]), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(jax.tree.leaves(one_state["params"]), jax.tree.leaves(eight_state["params"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    assert eight_metrics["train/loss"] == pytest.approx(one_metrics["train/loss"], rel=1e-5)


def test_fsdp_shards_the_state_and_trains_like_replicated(data_dir, tmp_path):
    replicated = _run_on_devices(8, data_dir, tmp_path / "replicated")
    fsdp = _run_on_devices(8, data_dir, tmp_path / "fsdp", fsdp_size=4)
    assert replicated.returncode == 0 and fsdp.returncode == 0, (replicated.stderr + fsdp.stderr)[-3000:]
    replicated_metrics, fsdp_metrics = (json.loads(run.stdout.splitlines()[-1]) for run in (replicated, fsdp))
    for key in ("train/loss", "eval/loss", "eval/ema_loss"):
        assert fsdp_metrics[key] == pytest.approx(replicated_metrics[key], rel=1e-5), key
    replicated_state, fsdp_state = (checkpointed_state(tmp_path / name, 2) for name in ("replicated", "fsdp"))
    for a, b in zip(jax.tree.leaves(replicated_state), jax.tree.leaves(fsdp_state), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The checkpoint records how each array was laid out: the large ones over the fsdp axis.
    layouts = {
        name: [tuple(leaf.sharding.partition_spec) for leaf in jax.tree.leaves(checkpoint_metadata(tmp_path / name, 2))]
        for name in ("replicated", "fsdp")
    }
    assert not any("fsdp" in spec for spec in layouts["replicated"])
    sharded = sum("fsdp" in spec for spec in layouts["fsdp"])
    assert 0 < sharded < len(layouts["fsdp"])


def test_grouped_batch_norm_depends_on_the_images_per_group_not_the_devices(data_dir, tmp_path):
    # 16 images in 2 BatchNorm groups of 8 either way: 8 devices in groups of 4, or 2 devices alone.
    runs = {
        "8x4": _run_on_devices(8, data_dir, tmp_path / "8x4", bn_group_size=4),
        "2x1": _run_on_devices(2, data_dir, tmp_path / "2x1", bn_group_size=1),
        "global": _run_on_devices(2, data_dir, tmp_path / "global"),
    }
    for result in runs.values():
        assert result.returncode == 0, result.stderr[-3000:]
    stats = {name: jax.tree.leaves(checkpointed_state(str(tmp_path / name), 2)["batch_stats"]) for name in runs}
    for a, b in zip(stats["8x4"], stats["2x1"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    largest_gap = max(float(np.max(np.abs(a - b))) for a, b in zip(stats["8x4"], stats["global"], strict=True))
    assert largest_gap > 1e-3  # the groups really normalise with their own statistics


def test_bn_group_size_must_divide_the_devices(data_dir, tmp_path):
    result = _run_on_devices(8, data_dir, tmp_path, bn_group_size=3)
    assert result.returncode != 0
    assert "config.bn_group_size: bn_group_size=3 must be 0" in result.stderr


def test_batch_not_divisible_by_devices_is_a_clear_error(data_dir, tmp_path):
    result = _run_on_devices(8, data_dir, tmp_path, batch_size=12)
    assert result.returncode != 0
    assert "config.batch_size: batch_size=12 is not divisible by the 8 devices" in result.stderr
