"""LACS: the grid and its constraints, the reward, the family configs, and real sweeps of tiny models
(in process, two worker processes sharing a journal, a killed worker, two JAX processes over loopback)."""

import itertools
import json
import pathlib
import re
import subprocess
import sys
import threading
import time

import ml_collections
import optuna
import pytest

from effnetx_jax import config_files
from effnetx_jax.errors import UserError
from effnetx_jax.models import architecture, model_config
from effnetx_jax.studies import candidates, lifecycle, loop, plots
from effnetx_jax.studies.lacs import experiment, family, sweep
from effnetx_jax.studies.lacs.run import run_lacs
from effnetx_jax.studies.storage import open_storage

from conftest import (
    kill_once_one_trial_finished_and_one_runs,
    process_env,
    run_to_end,
    study_trials,
    tool_process,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
# The experiment shrunk for tests (see its docstring); the tests add their grids and constraints.
EXPERIMENT = "experiments/lacs/digits_cpu.py:test"
PROCESS_TIMEOUT_S = 400


def _experiment(data_dir=None, **grid):
    config = config_files.load_config(str(REPO / EXPERIMENT))
    config.grid.update(grid)
    if data_dir:
        config.proxy.data_dir = config.family.trainer.data_dir = str(data_dir)
    return config


def _overrides(data_dir, grid: dict, target: float, tolerance: float) -> list[str]:
    """`_experiment`'s data dir and a grid and constraint, as command-line flags."""
    flags = [
        f"--config.constraint.target={target}",
        f"--config.constraint.tolerance={tolerance}",
        f"--config.proxy.data_dir={data_dir}",
    ]
    return flags + [f"--config.grid.{name}=({','.join(map(str, values))},)" for name, values in grid.items()]


# --- grid, constraints, reward ---------------------------------------------------------------------------


def test_flops_constraint_keeps_the_points_within_tolerance_of_the_target():
    config = _experiment()
    points = experiment.grid_points(config)
    assert len(points) == 6 * 3 * 4
    kept = [p for p in points if experiment.flops_violation(p, config.constraint) is None]
    assert len(kept) == 11
    assert (1.2, 1.1, 1.15) in kept and (2.0, 1.0, 1.0) in kept and (1.0, 1.0, 1.0) not in kept
    assert all(abs(experiment.flops_ratio(p) - 2.0) <= 0.1 + 1e-9 for p in kept)
    assert "alpha*beta^2*gamma^2 = 1.000 is outside 2 +- 0.1" in experiment.flops_violation(
        (1.0, 1.0, 1.0), config.constraint
    )
    # Under a latency constraint the FLOPs rule does not filter anything.
    config.constraint.kind = "latency"
    assert all(experiment.flops_violation(p, config.constraint) is None for p in points)


def test_latency_constraint_compares_with_the_base_latency():
    constraint = ml_collections.ConfigDict({"kind": "latency", "target": 2.0, "tolerance": 0.2})
    assert experiment.latency_violation(21.0, 10.0, constraint) is None
    assert experiment.latency_violation(18.0, 10.0, constraint) is None
    assert "2.300x the base model's is outside 2 +- 0.2" in experiment.latency_violation(23.0, 10.0, constraint)
    assert experiment.latency_violation(17.9, 10.0, constraint) is not None
    constraint.kind = "flops"
    assert experiment.latency_violation(50.0, 10.0, constraint) is None


def test_reward_is_accuracy_times_relative_latency_to_the_power_w():
    assert candidates.reward(0.8, 20.0, 10.0) == pytest.approx(0.8 * 2**-0.07)
    assert candidates.reward(0.8, 10.0, 10.0, exponent=-0.5) == pytest.approx(0.8)
    # T scales every reward alike: the ranking of two points does not depend on it.
    a, b = (0.80, 10.0), (0.82, 12.0)
    for target in (1.0, 10.0, 100.0):
        assert candidates.reward(*b, target) > candidates.reward(*a, target)
    assert candidates.reward(*b, 10.0, exponent=-0.2) < candidates.reward(*a, 10.0, exponent=-0.2)
    with pytest.raises(ValueError, match="positive"):
        candidates.reward(0.8, 0.0, 10.0)


def test_default_target_latency_is_the_constraint_target_times_the_base():
    config = _experiment()
    assert experiment.target_latency_ms(config, 10.0) == 20.0
    config.objective.target_latency_ms = 7.0
    assert experiment.target_latency_ms(config, 10.0) == 7.0


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("constraint.kind", "params", "config.constraint.kind: must be one of"),
        ("grid.alpha", (0.9, 1.2), "config.grid.alpha: every coefficient must be a number >= 1"),
        ("family.phis", (1.0, 2.0), r"config.family.phis: needs one phi per name \(7\), got 2"),
        ("objective.exponent", 0.07, "config.objective.exponent: must be <= 0"),
        ("latency.mode", "serve", "config.latency.mode: must be one of"),
    ],
)
def test_bad_experiment_configs_name_the_key(key, value, message):
    config = _experiment()
    section, name = key.split(".")
    config[section][name] = value
    with pytest.raises(ValueError, match=message):
        experiment.check_experiment(config)


def test_missing_experiment_key_is_named():
    config = _experiment()
    del config.latency["dtype"]
    with pytest.raises(ValueError, match=r"config.latency.dtype: missing"):
        experiment.check_experiment(config)


# --- scaling and family configs --------------------------------------------------------------------------


def test_efficientnet_coefficients_reproduce_efficientnet_b2_at_phi_1():
    scaled = family.scale_model(model_config("efficientnet-b0"), (1.2, 1.1, 1.15), phi=1.0)
    b2 = model_config("efficientnet-b2")
    assert (scaled.width, scaled.depth) == (b2.width, b2.depth) == (1.1, 1.2)
    # 224 x 1.15 = 257.6: the reference's table rounded it by hand to 260.
    assert scaled.resolution == 258
    scaled_arch, b2_arch = architecture(scaled), architecture(b2)
    assert scaled_arch.blocks == b2_arch.blocks
    assert (scaled_arch.stem_filters, scaled_arch.head_filters) == (b2_arch.stem_filters, b2_arch.head_filters)


def test_scaling_rounds_the_multipliers_to_two_decimals_and_the_resolution_to_a_pixel():
    base = model_config("efficientnet-x-b0")
    scaled = family.scale_model(base, (1.2, 1.1, 1.15), phi=3.0)
    assert scaled.depth == 1.73  # 1.2^3 = 1.728
    assert scaled.width == 1.33  # 1.1^3 = 1.331
    assert scaled.resolution == 341  # 224 x 1.520875 = 340.68
    same = family.scale_model(base, (1.0, 1.0, 1.0), phi=1.0)
    assert (same.width, same.depth, same.resolution) == (1.0, 1.0, 224)
    # Relative to the base: a narrow base stays narrow.
    base.update(width=0.5, depth=0.5, resolution=32)
    scaled = family.scale_model(base, (1.2, 1.1, 1.15), phi=1.0)
    assert (scaled.width, scaled.depth, scaled.resolution) == (0.55, 0.6, 37)


def test_family_configs_are_loadable_trainer_configs_with_the_scaled_models(tmp_path):
    config = _experiment(tmp_path)
    members = family.write_family(config, (1.2, 1.1, 1.15), str(tmp_path / "configs"), "effnetx-lacs")
    assert [m["name"] for m in members] == [f"efficientnet-x-lacs-digits-b{i}" for i in range(1, 8)]
    assert [m["dropout"] for m in members] == list(config.family.dropout)
    gflops = [m["gflops"] for m in members]
    assert all(a < b for a, b in itertools.pairwise(gflops)) and gflops[-1] > 8 * gflops[0]
    loaded = config_files.load_config(members[2]["config"])
    assert loaded.model.depth == pytest.approx(1.44)  # phi=2: 1.2^2
    assert loaded.model.resolution == round(32 * 1.15**2)
    assert loaded.total_steps == 2 and loaded.dataset == "digits"
    # Unset fields keep their type, so the command line can still set them.
    assert loaded.get_ref("eval_every_epochs").get_type() is float
    assert config_files.load_config(members[0]["config"]).data.mean == config.family.trainer.data.mean


def test_rendered_config_round_trips_including_unset_fields(tmp_path):
    from effnetx_jax import recipe

    original = recipe.get_config("efficientnet-x-b0")
    path = tmp_path / "copy.py"
    path.write_text(config_files.render_config(original, "A copy."))
    loaded = config_files.load_config(str(path))
    assert loaded == original
    assert loaded.get_ref("total_steps").get_type() is int and loaded.total_steps is None


def test_pareto_front_keeps_the_points_nothing_beats():
    rows = [
        {"latency_ms": 1.0, "accuracy": 0.5},
        {"latency_ms": 2.0, "accuracy": 0.7},
        {"latency_ms": 2.5, "accuracy": 0.6},
        {"latency_ms": 3.0, "accuracy": 0.9},
        {"latency_ms": 3.0, "accuracy": 0.8},
    ]
    assert plots.pareto_front(rows) == [rows[0], rows[1], rows[3]]


def test_a_study_made_by_another_experiment_config_is_refused(tmp_path):
    storage = open_storage(None, str(tmp_path))
    sweep.open_lacs_study(_experiment(), storage)
    sweep.open_lacs_study(_experiment(), storage)  # the same config joins
    changed = _experiment()
    changed.constraint.tolerance = 0.2
    with pytest.raises(ValueError, match="created by a different experiment config"):
        sweep.open_lacs_study(changed, storage)


def test_a_flops_constraint_no_grid_point_meets_is_refused_before_the_study_exists(tmp_path):
    config = _experiment()
    config.constraint.update(target=5.0, tolerance=0.5)  # the grid's largest ratio: 2 x 1.2^2 x 1.2^2 = 4.147
    with pytest.raises(UserError) as raised:
        run_lacs(config, str(tmp_path))
    assert str(raised.value) == (
        "config.constraint: no grid point meets alpha*beta^2*gamma^2 = 5 +- 0.5; the closest, alpha=2 beta=1.2 "
        "gamma=1.2, has 4.147; change constraint.target or constraint.tolerance, or the grid"
    )
    assert list(tmp_path.iterdir()) == []  # no study, nothing measured


@pytest.mark.slow
def test_a_sweep_whose_latency_constraint_skips_every_point_says_so_in_its_last_line(tmp_path):
    # Only latencies are measured (the base model's and the one point's, the same model): nothing trains.
    config = _experiment(tmp_path, alpha=(1.0,), beta=(1.0,), gamma=(1.0,))
    config.constraint.update(kind="latency", target=50.0, tolerance=0.5)
    lines = []
    report = run_lacs(config, str(tmp_path), command="test", log=lines.append)
    assert [row["status"] for row in report["points"]] == ["skipped"]
    assert not (tmp_path / "trials").exists()
    assert re.fullmatch(
        r"no point completed \(no grid point meets latency / the base model's = 50 \+- 0.5; the closest, alpha=1 "
        r"beta=1 gamma=1, has \d+\.\d{3}\), so no family configs were written",
        lines[-1],
    )


def test_a_trial_taken_over_by_another_worker_drops_this_workers_result_without_a_crash(tmp_path, monkeypatch):
    thread_errors = []
    monkeypatch.setattr(threading, "excepthook", thread_errors.append)
    config = _experiment()
    study = sweep.open_lacs_study(config, open_storage(None, str(tmp_path)))
    other_worker = sweep.open_lacs_study(config, open_storage(None, str(tmp_path)))
    trial = study.ask(sweep._distributions(config))
    lines = []
    with lifecycle.heartbeat(trial, interval_s=0.05):
        time.sleep(0.2)  # as if this machine stalled: the other worker saw no heartbeat for too long
        assert lifecycle.fail_stale_trials(other_worker, stale_after_s=0.0) == [trial.number]
        time.sleep(0.2)  # the heartbeat thread tries again, and stops
        with lifecycle.unless_taken_over(trial, lines.append):
            outcome = {"status": "complete", "accuracy": 0.9, "reward": 0.9}
            loop.record(study, trial, outcome, sweep.Sweep(config, str(tmp_path), base_ms=1.0))
    assert lines == [
        f"trial {trial.number}: another worker took it over (no heartbeat from here for longer than its "
        "--stale_after_s), so this result is dropped and the trial evaluated again; raise --stale_after_s if this "
        "machine stalls"
    ]
    (failed,) = study.get_trials(deepcopy=False)
    assert failed.state == optuna.trial.TrialState.FAIL and "accuracy" not in failed.user_attrs
    assert thread_errors == []


def test_storage_url_must_be_a_database():
    with pytest.raises(ValueError, match=r"--storage='redis://x': expected a database URL"):
        open_storage("redis://x", "/tmp")


# --- real sweeps -----------------------------------------------------------------------------------------


def _trials(workdir):
    return study_trials(workdir, "digits_cpu")


@pytest.fixture(scope="module")
def two_point_sweep(data_dir, tmp_path_factory):
    """A finished sweep of two points: its config, workdir, SQLite storage URL, report and output lines."""
    workdir = tmp_path_factory.mktemp("lacs")
    config = _experiment(data_dir, alpha=(1.0, 2.0), beta=(1.0,), gamma=(1.0,))
    config.constraint.update(target=1.5, tolerance=0.5)
    storage = f"sqlite:///{workdir}/lacs.db"
    lines = []
    report = run_lacs(config, str(workdir), storage=storage, command="test", log=lines.append)
    return config, workdir, storage, report, lines


@pytest.mark.slow
def test_two_point_sweep_end_to_end_then_a_rerun_trains_nothing(two_point_sweep):
    config, tmp_path, storage, report, lines = two_point_sweep
    assert [row["status"] for row in report["points"]] == ["complete", "complete"]
    assert report["chosen"] == max(report["points"], key=lambda row: row["reward"])
    for row in report["points"]:
        assert 0 <= row["accuracy"] <= 1 and row["latency_ms"] > 0 and row["gflops"] > 0
        target = report["base"]["target_latency_ms"]
        assert row["reward"] == pytest.approx(row["accuracy"] * (row["latency_ms"] / target) ** -0.07)
    assert [row["depth"] for row in report["points"]] == [1.0, 2.0]
    on_disk = json.loads((tmp_path / "lacs.json").read_text())
    assert on_disk["chosen"] == report["chosen"] and len(on_disk["family"]) == 7
    assert "**chosen**" in (tmp_path / "lacs.md").read_text()
    assert (tmp_path / "lacs.png").stat().st_size > 10_000
    assert lines[0].startswith("[1/2] trial 0") and "reward" in lines[0]

    # Resume: every point is done, so nothing is measured or trained again.
    mtimes = {path: path.stat().st_mtime for path in (tmp_path / "trials").rglob("metrics.jsonl")}
    rerun_lines = []
    again = run_lacs(config, str(tmp_path), storage=storage, command="test", log=rerun_lines.append)
    assert rerun_lines[0].startswith("this worker evaluated 0 point(s)")
    assert again["points"] == report["points"]
    assert {path: path.stat().st_mtime for path in mtimes} == mtimes


@pytest.mark.slow
def test_a_generated_family_config_trains_with_train_py(two_point_sweep):
    _, tmp_path, _, report, _ = two_point_sweep
    b1 = report["family"][0]["config"]
    command = [sys.executable, "train.py", f"--config={b1}", f"--workdir={tmp_path / 'b1'}", "--config.total_steps=1"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 1:" in result.stdout


@pytest.mark.slow
def test_a_failing_point_is_recorded_with_its_error_and_the_sweep_goes_on(data_dir, tmp_path):
    config = _experiment(data_dir, alpha=(1.0, 2.0), beta=(1.0,), gamma=(1.0,))
    config.constraint.update(target=1.5, tolerance=0.5)
    config.proxy.update(learning_rate=1e30, total_steps=4, checkpoint_every_steps=1)
    lines = []
    report = run_lacs(config, str(tmp_path), command="test", log=lines.append)
    assert [row["status"] for row in report["points"]] == ["failed", "failed"]
    assert all("NonFiniteLossError: the training loss became non-finite" in row["error"] for row in report["points"])
    assert report["chosen"] is None and report["family"] == []
    assert not (tmp_path / "configs").exists()
    assert "FAILED, NonFiniteLossError" in lines[0] and "FAILED" in lines[1]
    assert "no point completed" in lines[-1]
    assert "NonFiniteLossError" in (tmp_path / "lacs.md").read_text()
    # Failed points count as done: a rerun does not retry them.
    lines.clear()
    run_lacs(config, str(tmp_path), command="test", log=lines.append)
    assert lines[0].startswith("this worker evaluated 0 point(s)")


def _worker(workdir, data_dir, grid, *flags):
    return tool_process(
        "effnetx_jax.cli.lacs",
        f"--config={EXPERIMENT}",
        f"--workdir={workdir}",
        *_overrides(data_dir, grid, target=1.25, tolerance=0.3),
        *flags,
    )


@pytest.mark.slow
def test_the_console_script_runs_an_experiment_that_imports_the_repositorys_configs(data_dir, tmp_path):
    """`effnetx-lacs --config=experiments/lacs/digits_cpu.py` from the repository root, as the docs run it: the
    experiment imports `configs.quickstart`, and a console script's own path holds only its bin directory."""
    script = pathlib.Path(sys.executable).parent / "effnetx-lacs"
    flags = [f"--config={EXPERIMENT}", f"--workdir={tmp_path}", "--create_only"]
    command = [str(script), *flags, *_overrides(data_dir, FOUR_POINTS, target=1.25, tolerance=0.3)]
    result = subprocess.run(command, cwd=REPO, env=process_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "optuna.journal").is_file()


def _points_by_state(trials):
    return {
        state: sorted(
            sweep.point_of(t) for t in trials if t.state == state and lifecycle.DUPLICATE_KEY not in t.user_attrs
        )
        for state in optuna.trial.TrialState
    }


FOUR_POINTS = {"alpha": (1.0, 1.2), "beta": (1.0,), "gamma": (1.0, 1.1)}


@pytest.mark.slow
def test_two_workers_share_a_journal_and_split_the_grid(data_dir, tmp_path):
    outputs = run_to_end([_worker(tmp_path, data_dir, FOUR_POINTS, "--poll_s=1") for _ in range(2)], PROCESS_TIMEOUT_S)
    trials = _trials(tmp_path)
    by_state = _points_by_state(trials)
    grid = sorted((a, 1.0, g) for a in (1.0, 1.2) for g in (1.0, 1.1))
    # Every point was trained exactly once, by one of the two workers.
    assert by_state[optuna.trial.TrialState.COMPLETE] == grid
    owners = {t.user_attrs["worker"] for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert len(owners) == 2
    evaluated = [int(stdout.split("this worker evaluated ")[1].split()[0]) for stdout in outputs]
    assert sum(evaluated) == 4 and min(evaluated) >= 1


@pytest.mark.slow
def test_a_killed_workers_point_is_retried_and_finished_points_are_not(data_dir, tmp_path):
    grid = {"alpha": (1.0, 1.2), "beta": (1.0,), "gamma": (1.0,)}
    kill_once_one_trial_finished_and_one_runs(
        _worker(tmp_path, data_dir, grid), tmp_path, "digits_cpu", PROCESS_TIMEOUT_S
    )
    (done,) = _points_by_state(_trials(tmp_path))[optuna.trial.TrialState.COMPLETE]

    second = _worker(tmp_path, data_dir, grid, "--stale_after_s=2", "--heartbeat_s=0.5", "--poll_s=0.5")
    stdout, stderr = second.communicate(timeout=PROCESS_TIMEOUT_S)
    assert second.returncode == 0, stderr[-3000:]
    assert "this worker evaluated 1 point(s)" in stdout
    by_state = _points_by_state(_trials(tmp_path))
    killed = next(p for p in [(1.0, 1.0, 1.0), (1.2, 1.0, 1.0)] if p != done)
    assert by_state[optuna.trial.TrialState.COMPLETE] == sorted([done, killed])
    # The killed worker's trial is failed without an error (interrupted), not counted as a result.
    assert by_state[optuna.trial.TrialState.FAIL] == [killed]
    report = json.loads((tmp_path / "lacs.json").read_text())
    assert [row["status"] for row in report["points"]] == ["complete", "complete"]
