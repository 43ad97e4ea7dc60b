"""What protects a workdir: one writer at a time, refused runs that write nothing, and damaged checkpoints
that cost one checkpoint interval instead of the run."""

import hashlib
import json
import logging
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from effnetx_jax import weights
from effnetx_jax.errors import UserError
from effnetx_jax.train import evaluate_checkpoint, train_and_evaluate, workdir_lock
from effnetx_jax.train.checkpoints import DAMAGED_DIR, Checkpoints
from effnetx_jax.train.components import build_components

from conftest import checkpoint_steps, read_jsonl, tiny_run_config, trained_run_config


def snapshot(directory: pathlib.Path) -> dict[str, str]:
    """Every file and folder under `directory` with the SHA-256 of each file: equal snapshots, equal trees."""
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        for path in sorted(directory.rglob("*"))
    }


# --- a refused run writes nothing ------------------------------------------------------------------------


def test_a_rerun_refused_for_another_model_leaves_the_workdir_byte_identical(data_dir, copy_of_trained_run):
    before = snapshot(copy_of_trained_run)
    other = trained_run_config(data_dir, total_steps=9)
    other.model.width = 0.5
    with pytest.raises(UserError, match="written for another config"):
        train_and_evaluate(other, str(copy_of_trained_run))
    assert snapshot(copy_of_trained_run) == before


def test_a_run_refused_for_its_init_from_leaves_no_workdir_behind(data_dir, tmp_path):
    config = tiny_run_config(data_dir, init_from=str(tmp_path / "no-such-weights"))
    with pytest.raises(UserError, match=r"config\.init_from"):
        train_and_evaluate(config, str(tmp_path / "new"))
    assert not (tmp_path / "new").exists()
    # A workdir that exists (here holding a file of the user's) is left exactly as it was.
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"config\.init_from"):
        train_and_evaluate(config, str(existing))
    assert snapshot(existing) == {"notes.txt": hashlib.sha256(b"mine").hexdigest()}


def test_a_workdir_that_is_a_file_is_refused(data_dir, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=r"--workdir .*file is a file; give a directory"):
        train_and_evaluate(tiny_run_config(data_dir), str(tmp_path / "file"))


# --- one writer per workdir -----------------------------------------------------------------------------


def test_a_run_on_a_held_workdir_is_refused_naming_the_holder(data_dir, copy_of_trained_run):
    with workdir_lock.hold(str(copy_of_trained_run)):
        before = snapshot(copy_of_trained_run)
        with pytest.raises(workdir_lock.WorkdirLocked, match=rf"in use: held by process {os.getpid()} on "):
            train_and_evaluate(trained_run_config(data_dir, total_steps=9), str(copy_of_trained_run))
        assert snapshot(copy_of_trained_run) == before
    assert not (copy_of_trained_run / workdir_lock.LOCK_FILE).exists()


def _write_lock(workdir: pathlib.Path, **holder) -> pathlib.Path:
    path = workdir / workdir_lock.LOCK_FILE
    path.write_text(json.dumps({"started": time.time(), "token": "theirs", **holder}))
    return path


def test_the_lock_of_a_dead_process_is_taken_over(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _write_lock(tmp_path, host=socket.gethostname(), pid=int(finished.stdout))
    with workdir_lock.hold(str(tmp_path)):
        assert json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / workdir_lock.LOCK_FILE).exists()


def test_a_lock_from_another_host_is_stale_only_after_its_heartbeat_stops(tmp_path):
    path = _write_lock(tmp_path, host="elsewhere", pid=1)
    with (
        pytest.raises(workdir_lock.WorkdirLocked, match="held by process 1 on elsewhere"),
        workdir_lock.hold(str(tmp_path)),
    ):
        pass
    old = time.time() - workdir_lock.STALE_AFTER_S - 1
    os.utime(path, (old, old))
    with workdir_lock.hold(str(tmp_path)):
        assert json.loads(path.read_text())["host"] == socket.gethostname()


def test_a_lock_taken_over_by_another_run_is_not_removed_by_the_first(tmp_path):
    with workdir_lock.hold(str(tmp_path)):
        theirs = _write_lock(tmp_path, host="elsewhere", pid=1)  # as if a run had taken it over
    assert json.loads(theirs.read_text())["token"] == "theirs"


# --- damaged checkpoints ---------------------------------------------------------------------------------


def _array_files(step_dir: pathlib.Path) -> list[pathlib.Path]:
    return sorted((step_dir / "state").rglob("d/*"), key=lambda path: path.stat().st_size)


def _largest_array_file(step_dir: pathlib.Path) -> pathlib.Path:
    return _array_files(step_dir)[-1]


# Each kind of damage a crash mid-write (or a lost file) leaves, and what the warning says about it.
DAMAGE = {
    "array files cut short": (lambda d: [_truncate(f, 0.5) for f in _array_files(d)], "its arrays cannot be read"),
    "array file missing": (lambda d: _largest_array_file(d).unlink(), "its arrays cannot be read"),
    "array file empty": (lambda d: _truncate(_largest_array_file(d), 0.0), "is empty"),
    "state metadata missing": (lambda d: (d / "state" / "_METADATA").unlink(), "state/_METADATA is missing"),
    "state metadata cut short": (lambda d: _truncate(d / "state" / "_METADATA", 0.5), "not valid JSON"),
    "checkpoint metadata missing": (lambda d: (d / "_CHECKPOINT_METADATA").unlink(), "_CHECKPOINT_METADATA is missing"),
    "input position missing": (lambda d: shutil.rmtree(d / "data"), "its data/ folder is missing"),
}


def _truncate(path: pathlib.Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


@pytest.fixture(scope="module")
def abstract_state(data_dir):
    return build_components(trained_run_config(data_dir)).abstract_state()


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_latest_checkpoint_is_skipped_for_the_newest_readable_one(kind, copy_of_trained_run, abstract_state):
    damage, reason = DAMAGE[kind]
    damage(copy_of_trained_run / "checkpoints" / "6")
    checkpoints = Checkpoints(str(copy_of_trained_run), read_only=True)
    resumed = checkpoints.restore_newest(abstract_state)
    checkpoints.close()
    assert resumed.step == 3
    assert list(resumed.damaged) == [6] and reason in resumed.damaged[6]
    assert "\n" not in resumed.damaged[6] and len(resumed.damaged[6]) < 300


def test_resuming_past_a_damaged_checkpoint_warns_once_sets_it_aside_and_continues(
    data_dir, copy_of_trained_run, caplog
):
    (copy_of_trained_run / "checkpoints" / "6" / "state" / "_METADATA").unlink()
    with caplog.at_level(logging.WARNING):
        metrics = train_and_evaluate(trained_run_config(data_dir, total_steps=9), str(copy_of_trained_run))
    assert metrics["step"] == 9
    warnings = [record.getMessage() for record in caplog.records if "is damaged" in record.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert f"step 6 in {copy_of_trained_run / 'checkpoints'} is damaged (state/_METADATA is missing)" in warnings[0]
    assert "using step 3, the newest readable one" in warnings[0]
    assert any("Moved the damaged checkpoint at step 6 to" in record.getMessage() for record in caplog.records)
    # Kept, out of the way of the new step 6, which this run wrote again.
    (kept,) = (copy_of_trained_run / DAMAGED_DIR).iterdir()
    assert kept.name.startswith("6-") and (kept / "state" / "manifest.ocdbt").exists()
    assert checkpoint_steps(copy_of_trained_run) == [6, 9]
    assert [line["step"] for line in read_jsonl(copy_of_trained_run) if "train/loss" in line] == [3, 6, 6, 9]


def test_a_workdir_whose_every_checkpoint_is_damaged_is_refused_untouched(data_dir, copy_of_trained_run):
    for step in (3, 6):
        (copy_of_trained_run / "checkpoints" / str(step) / "_CHECKPOINT_METADATA").unlink()
    before = snapshot(copy_of_trained_run)
    with pytest.raises(UserError, match=r"every checkpoint in .* is damaged \(step 6: .*; step 3: .*\)"):
        train_and_evaluate(trained_run_config(data_dir, total_steps=9), str(copy_of_trained_run))
    assert snapshot(copy_of_trained_run) == before


def test_evaluating_a_damaged_step_says_so_and_the_latest_falls_back(data_dir, copy_of_trained_run, caplog):
    for path in _array_files(copy_of_trained_run / "checkpoints" / "6"):
        _truncate(path, 0.5)
    config = trained_run_config(data_dir)
    with pytest.raises(UserError, match=r"the checkpoint at step 6 in .* is damaged: its arrays cannot be read"):
        evaluate_checkpoint(config, str(copy_of_trained_run), step=6)
    with caplog.at_level(logging.WARNING):
        result = evaluate_checkpoint(config, str(copy_of_trained_run))
    assert result["step"] == 3
    assert any("step 6 in" in record.getMessage() and "is damaged" in record.getMessage() for record in caplog.records)


def test_loading_weights_from_a_workdir_skips_a_damaged_latest_checkpoint(copy_of_trained_run):
    (copy_of_trained_run / "checkpoints" / "6" / "run").rename(copy_of_trained_run / "elsewhere")
    newest_readable = weights.read_variables(str(copy_of_trained_run))
    jax.tree.map(
        np.testing.assert_array_equal, newest_readable, weights.read_variables(str(copy_of_trained_run), step=3)
    )
    with pytest.raises(UserError, match=r"the checkpoint at step 6 in .* is damaged: its run/ folder is missing"):
        weights.read_variables(str(copy_of_trained_run), step=6)
