"""Architecture search: the space and its encoding, aging evolution, the cache, the latency sources, and
real searches of tiny models (in process, two worker processes sharing a journal, a killed worker)."""

import csv
import dataclasses
import json
import os
import pathlib
import time

import ml_collections
import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from effnetx_jax import config_files
from effnetx_jax.models import architecture, model_config
from effnetx_jax.studies import candidates, lifecycle
from effnetx_jax.studies.search import evolution, experiment, worker
from effnetx_jax.studies.search.run import open_search_study, run_search
from effnetx_jax.studies.search.space import InvalidCandidate, SearchSpace, canonical_key, default_choices
from effnetx_jax.studies.storage import open_storage

from conftest import (
    free_port,
    kill_once_one_trial_finished_and_one_runs,
    run_to_end,
    study_trials,
    tool_process,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
FULL_EXPERIMENT = "experiments/search/digits_cpu.py"
# The search shrunk for tests (see its docstring).
EXPERIMENT = f"{FULL_EXPERIMENT}:test"
PROCESS_TIMEOUT_S = 400


def _experiment(data_dir=None, max_trials=3):
    config = config_files.load_config(str(REPO / EXPERIMENT))
    config.budget.max_trials = max_trials
    if data_dir:
        config.proxy.data_dir = config.final.data_dir = str(data_dir)
    return config


def _overrides(data_dir, max_trials: int) -> list[str]:
    """`_experiment`'s data dir and budget, as command-line flags."""
    return [f"--config.budget.max_trials={max_trials}", f"--config.proxy.data_dir={data_dir}"]


def _b0_space() -> SearchSpace:
    return SearchSpace(model_config("efficientnet-b0"), default_choices())


# --- the space ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["efficientnet-b0", "efficientnet-x-b0"])
def test_the_reference_models_are_points_of_the_default_space(name):
    space = _b0_space()
    official = model_config(name)
    candidate = space.from_model(official)
    assert all(candidate[key] in choices for key, choices in space.decisions().items())
    rebuilt = space.to_model(candidate)
    assert dataclasses.replace(architecture(rebuilt), name=name) == architecture(official)
    assert canonical_key(rebuilt) == canonical_key(official)


def test_the_two_references_differ_where_the_paper_says():
    space = _b0_space()
    b0, x = (space.from_model(model_config(name)) for name in ("efficientnet-b0", "efficientnet-x-b0"))
    differing = sorted(key for key in b0 if b0[key] != x[key])
    assert differing == sorted(
        ["space_to_depth", "se_coefficient", "stage2_conv", "stage3_conv"]
        + [f"stage{i}_activation" for i in (1, 4, 5, 6, 7)]
    )


def test_random_candidates_and_their_mutations_are_valid_and_differ_in_one_decision():
    space = _b0_space()
    rng = np.random.default_rng(0)
    for _ in range(100):
        parent = space.random(rng)
        child = space.mutate(parent, rng)
        assert space.is_valid(parent) and space.is_valid(child)
        assert sum(parent[key] != child[key] for key in parent) == 1


def test_candidates_round_trip_through_model_configs():
    space = _b0_space()
    rng = np.random.default_rng(1)
    for _ in range(50):
        candidate = space.random(rng)
        model = space.to_model(candidate)
        assert space.from_model(model) == candidate
        # A rendered config (block strings and all) reads back as the same candidate.
        reloaded = ml_collections.ConfigDict(model.to_dict())
        assert canonical_key(reloaded) == canonical_key(model)


def test_invalid_combinations_are_rejected_with_the_reason():
    space = _b0_space()
    candidate = space.from_model(model_config("efficientnet-b0"))
    with pytest.raises(InvalidCandidate, match="stage1_repeats=-1: stage 1 has 1 repeat"):
        space.to_model({**candidate, "stage1_repeats": -1})
    odd = SearchSpace(model_config("efficientnet-b0"), default_choices())
    odd.skeleton.resolution = 228  # 114 px after the stem: not divisible by a space-to-batch block of 4
    with pytest.raises(InvalidCandidate, match="space-to-batch b4 needs input and output feature maps divisible"):
        odd.to_model({**candidate, "space_to_batch": 4})
    with pytest.raises(InvalidCandidate, match="decision 'se_coefficient' is missing"):
        space.to_model({k: v for k, v in candidate.items() if k != "se_coefficient"})
    with pytest.raises(InvalidCandidate, match="stage1_kernel=7 is not among the choices"):
        space.from_model(space.to_model({**candidate, "stage1_kernel": 7}))


def test_the_canonical_key_ignores_names_and_spellings_but_not_the_network():
    b0 = model_config("efficientnet-b0")
    spelled = ml_collections.ConfigDict(b0.to_dict())
    spelled.update(name="another", blocks=tuple(s + "_a1" for s in b0.blocks), stage_activations=())
    assert canonical_key(spelled) == canonical_key(b0)
    spelled.resolution = 256
    assert canonical_key(spelled) != canonical_key(b0)


# --- aging evolution ---------------------------------------------------------------------------------------


def _study_with_rewards(space, rewards, sampler=None):
    study = optuna.create_study(direction="maximize", sampler=sampler)
    rng = np.random.default_rng(2)
    for reward in rewards:
        study.enqueue_trial(space.random(rng))
        trial = study.ask()
        for name, choices in space.decisions().items():
            trial.suggest_categorical(name, choices)
        study.tell(trial, reward)
    return study


def test_aging_removes_the_oldest_member_and_the_tournament_takes_the_best_of_the_sample():
    space = _b0_space()
    study = _study_with_rewards(space, [0.9, 0.1, 0.5, 0.3])
    trials = study.get_trials(deepcopy=False)
    population = evolution.population_of(trials, 3)
    assert [t.number for t in population] == [1, 2, 3]  # trial 0 was oldest: gone, though the best
    rng = np.random.default_rng(0)
    assert evolution.tournament(population, 3, rng).number == 2
    samples = {evolution.tournament(population, 2, np.random.default_rng(seed)).number for seed in range(20)}
    assert samples == {2, 3}  # the worst member never wins a sample of two


def test_the_sampler_draws_at_random_until_the_population_is_full_then_mutates_the_winner():
    space = _b0_space()
    sampler = evolution.AgingEvolutionSampler(space, population=3, sample_size=3, seed=0)
    study = _study_with_rewards(space, [0.2, 0.7, 0.4], sampler)
    best = study.best_trial.params
    trial = study.ask()
    child = {name: trial.suggest_categorical(name, choices) for name, choices in space.decisions().items()}
    assert sum(child[key] != best[key] for key in best) == 1
    # Stateless: another sampler object (another worker) proposes the same child for the same trial.
    again = evolution.AgingEvolutionSampler(space, population=3, sample_size=3, seed=0)
    assert again.sample_relative(study, trial, again.infer_relative_search_space(study, trial)) == child


def test_the_budget_counts_finished_and_running_candidates_but_not_invalid_or_interrupted_ones():
    config = _experiment(max_trials=3)
    study = optuna.create_study(direction="maximize")
    study.set_user_attr(worker.STARTED_KEY, time.time())
    study.tell(study.ask(), 0.5)  # trained (or cached)
    study.tell(study.ask(), state=TrialState.PRUNED)  # invalid
    lifecycle.record_failure(study, study.ask(), "NonFiniteLossError: ...")  # failed: done for good
    study.tell(study.ask(), state=TrialState.FAIL)  # interrupted: will be retried
    assert worker.budget_spent(study, config, study.get_trials()) is None
    study.ask()  # running
    assert worker.budget_spent(study, config, study.get_trials()) == "3 candidates reached budget.max_trials=3"
    config.budget.update(max_trials=0, max_hours=0.5)
    assert worker.budget_spent(study, config, study.get_trials()) is None
    study.set_user_attr(worker.STARTED_KEY, time.time() - 1800.5)
    assert "budget.max_hours=0.5 has passed" in worker.budget_spent(study, config, study.get_trials())


def test_an_interrupted_candidate_is_queued_again_only_if_it_was_complete_and_not_yet_queued():
    space = _b0_space()
    study = optuna.create_study(direction="maximize")
    decided = study.ask()
    for name, choices in space.decisions().items():
        decided.suggest_categorical(name, choices)
    decided.set_user_attr(worker.CANONICAL_KEY, "abc")  # the candidate was complete: training had started
    partial = study.ask()
    partial.suggest_categorical("stage1_conv", ["depthwise", "fused"])  # died while the sampler decided
    for trial in (decided, partial):
        study.tell(trial, state=TrialState.FAIL)
    worker._requeue_interrupted(study, study.get_trials())
    worker._requeue_interrupted(study, study.get_trials())  # already queued: not a second time
    (queued,) = study.get_trials(states=(TrialState.WAITING,))
    assert queued.system_attrs["fixed_params"] == decided.params


# --- configs, latency ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("space.kernel", (), "config.space.kernel: must be a non-empty list"),
        ("algorithm.kind", "random", "config.algorithm.kind: must be one of"),
        ("algorithm.sample_size", 5, "config.algorithm.sample_size: must be in"),
        ("latency.source", "guess", "config.latency.source: must be one of"),
        ("references", ("efficientnet-x-b0",), "config.references: 'efficientnet-x-b0' is not a point of the space"),
    ],
)
def test_bad_experiment_configs_name_the_key(key, value, message):
    config = _experiment()
    section, _, leaf = key.rpartition(".")
    (config[section] if section else config)[leaf] = value
    with pytest.raises(ValueError, match=message):
        experiment.check_experiment(config)


def test_missing_experiment_key_is_named():
    config = _experiment()
    del config.algorithm["population"]
    with pytest.raises(ValueError, match=r"config.algorithm.population: missing; see experiments/search/digits_cpu.py"):
        experiment.check_experiment(config)


def test_a_space_without_a_valid_candidate_is_refused():
    config = _experiment()
    config.space.repeats = (-1,)  # every stage of the skeleton has one repeat
    with pytest.raises(ValueError, match=r"config.space: no valid candidate in 200 random draws"):
        experiment.check_experiment(config)


def test_a_search_needs_a_budget_and_the_analytic_latency_its_hardware():
    config = _experiment()
    config.budget.max_trials = 0
    with pytest.raises(ValueError, match=r"config.budget: set max_trials, max_hours or both"):
        experiment.check_experiment(config)
    config = _experiment()
    config.latency.source = "analytic"
    with pytest.raises(ValueError, match="analytic source needs peak_tflops > 0 and memory_gbs > 0"):
        experiment.check_experiment(config)


def test_analytic_latency_is_a_roofline_of_the_layers():
    model = model_config("efficientnet-x-b0")
    latency = ml_collections.ConfigDict({"batch": 128, "dtype": "bfloat16", "peak_tflops": 100.0, "memory_gbs": 1e3})
    base = candidates.analytic_latency_ms(model, latency)
    # More bandwidth helps the memory-bound layers only; infinite compute leaves the memory time.
    faster_memory = candidates.analytic_latency_ms(model, ml_collections.ConfigDict({**latency, "memory_gbs": 2e3}))
    assert base / 2 < faster_memory < base
    only_memory = candidates.analytic_latency_ms(model, ml_collections.ConfigDict({**latency, "peak_tflops": 1e12}))
    from effnetx_jax.models import costs

    layers = costs.all_layers(architecture(model), model.resolution)
    assert only_memory == pytest.approx(costs.bytes_moved(layers, 128, 2) / 1e12 * 1e3, rel=1e-6)


# --- searches --------------------------------------------------------------------------------------------


def _history(workdir) -> list[dict]:
    with open(os.path.join(workdir, "history.csv")) as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_three_candidate_search_end_to_end_then_best_py_trains(data_dir, tmp_path):
    config = _experiment(data_dir, max_trials=3)
    lines = []
    best = run_search(config, str(tmp_path), command="test", log=lines.append)

    history = _history(tmp_path)
    assert [row["status"] for row in history if row["status"] != "cached"] == ["complete"] * len(
        [row for row in history if row["status"] == "complete"]
    )
    counted = [row for row in history if row["status"] in ("complete", "cached")]
    assert len(counted) == 3
    trained = [row for row in history if row["status"] == "complete"]
    assert len({row["canonical"] for row in trained}) == len(trained)  # no architecture trained twice
    for row in trained:
        accuracy, latency = float(row["accuracy"]), float(row["latency_ms"])
        assert 0 <= accuracy <= 1 and latency > 0 and float(row["gflops"]) > 0 and int(row["params"]) > 0
        assert float(row["compile_s"]) > 0
        assert float(row["reward"]) == pytest.approx(accuracy * latency**-0.07)
    assert best["reward"] == max(float(row["reward"]) for row in trained)
    assert lines[0].startswith("[1/3] trial 0: reward") and "ETA" in lines[0]
    assert "budget spent: 3 candidates reached budget.max_trials=3" in lines
    assert (tmp_path / "pareto.png").stat().st_size > 10_000
    assert f"Best: trial {best['trial']}" in (tmp_path / "report.md").read_text()

    # Resume with the budget spent: nothing is trained again; a larger budget extends the same search.
    lines.clear()
    run_search(config, str(tmp_path), command="test", log=lines.append)
    assert lines[1].startswith("this worker trained 0 candidate(s)")

    best_config = config_files.load_config(str(tmp_path / "best.py"))
    assert canonical_key(best_config.model) == best["canonical"]
    from effnetx_jax.train import train_and_evaluate

    metrics = train_and_evaluate(best_config, str(tmp_path / "best"))
    assert metrics["step"] == 2


def test_identical_architectures_are_trained_once_and_nsga2_records_two_objectives(data_dir, tmp_path):
    config = _experiment(data_dir, max_trials=3)
    config.algorithm.kind = "nsga2"
    # One decision varies, and at width 0.25 its two choices build the same network (8 filters either way).
    for choice in config.space:
        config.space[choice] = (config.space[choice][0],)
    config.space.update(repeats=(0,), width=(0.75, 1.0))
    run_search(config, str(tmp_path), command="test", log=lambda line: None)

    history = _history(tmp_path)
    assert [row["status"] for row in history] == ["complete", "cached", "cached"]
    assert {row["accuracy"] for row in history} == {history[0]["accuracy"]}
    assert [row["cached_from"] for row in history] == ["", "0", "0"]
    assert len(list((tmp_path / "trials").iterdir())) == 1
    trials = optuna.load_study(study_name="digits_cpu", storage=open_storage(None, str(tmp_path))).get_trials(
        deepcopy=False
    )
    assert [len(t.values) for t in trials] == [2, 2, 2]  # accuracy and latency
    assert trials[0].values == [float(history[0]["accuracy"]), float(history[0]["latency_ms"])]


def test_an_invalid_candidate_is_rejected_with_its_reason_before_training(data_dir, tmp_path):
    config = _experiment(data_dir, max_trials=1)
    study = open_search_study(config, open_storage(None, str(tmp_path)))
    valid = experiment.space_of(config).random(np.random.default_rng(0))
    study.enqueue_trial({**valid, "stage2_repeats": -1})  # e.g. queued by hand or by NSGA-II's crossover
    lines = []
    run_search(config, str(tmp_path), command="test", log=lines.append)
    history = _history(tmp_path)
    assert [row["status"] for row in history] == ["invalid", "complete"]
    assert history[0]["note"] == "stage2_repeats=-1: stage 2 has 1 repeat(s), and a stage needs at least one"
    assert history[0]["accuracy"] == "" and len(list((tmp_path / "trials").iterdir())) == 1
    assert lines[0].startswith("trial 0: invalid, stage2_repeats=-1")
    assert "stage2_repeats=-1" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_a_failing_candidate_is_recorded_with_its_error_and_the_search_goes_on(data_dir, tmp_path):
    config = _experiment(data_dir, max_trials=2)
    config.proxy.update(learning_rate=1e30, total_steps=4, checkpoint_every_steps=1)
    lines = []
    best = run_search(config, str(tmp_path), command="test", log=lines.append)
    assert best is None and not (tmp_path / "best.py").exists()
    history = _history(tmp_path)
    assert [row["status"] for row in history] == ["failed", "failed"]
    assert all("NonFiniteLossError: the training loss became non-finite" in row["note"] for row in history)
    assert "FAILED, NonFiniteLossError" in lines[0] and "no candidate completed" in lines[-1]
    assert "NonFiniteLossError" in (tmp_path / "report.md").read_text()


def test_the_references_are_queued_first_and_their_results_marked():
    config = config_files.load_config(str(REPO / FULL_EXPERIMENT))
    study = optuna.create_study(direction="maximize")
    worker.prepare_study(study, config)
    worker.prepare_study(study, config)  # a second worker joining does not queue them again
    space = experiment.space_of(config)
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert [t.user_attrs[worker.REFERENCE_KEY] for t in waiting] == ["efficientnet-b0", "efficientnet-x-b0"]
    for trial in waiting:
        model = space.to_model(trial.system_attrs["fixed_params"])
        reference = experiment.reference_model(config, trial.user_attrs[worker.REFERENCE_KEY])
        assert canonical_key(model) == canonical_key(reference)
        assert model.width == 0.5 and model.resolution == 32  # the skeleton's scale


def _worker(workdir, data_dir, max_trials, *flags):
    return tool_process(
        "effnetx_jax.cli.search",
        f"--config={EXPERIMENT}",
        f"--workdir={workdir}",
        *_overrides(data_dir, max_trials),
        *flags,
    )


def _trials(workdir):
    return study_trials(workdir, "digits_cpu")


@pytest.mark.slow
def test_two_workers_share_a_journal_and_together_finish_the_budget(data_dir, tmp_path):
    outputs = run_to_end([_worker(tmp_path, data_dir, 4, "--poll_s=1") for _ in range(2)], PROCESS_TIMEOUT_S)
    trials = _trials(tmp_path)
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(finished) == 4
    trained = [t for t in finished if worker.CACHED_KEY not in t.user_attrs]
    assert len({t.user_attrs[worker.CANONICAL_KEY] for t in trained}) == len(trained)
    assert len({t.user_attrs["worker"] for t in trained}) == 2  # both workers trained candidates
    assert sum(int(stdout.split("this worker trained ")[1].split()[0]) for stdout in outputs) == len(trained)


@pytest.mark.slow
def test_a_killed_workers_candidate_is_retried_with_the_same_decisions(data_dir, tmp_path):
    first = _worker(tmp_path, data_dir, 2)
    kill_once_one_trial_finished_and_one_runs(first, tmp_path, "digits_cpu", PROCESS_TIMEOUT_S)
    (killed,) = [t for t in _trials(tmp_path) if t.state == TrialState.RUNNING]

    second = _worker(tmp_path, data_dir, 2, "--stale_after_s=2", "--heartbeat_s=0.5", "--poll_s=0.5")
    stdout, stderr = second.communicate(timeout=PROCESS_TIMEOUT_S)
    assert second.returncode == 0, stderr[-3000:]
    assert "this worker trained 1 candidate(s)" in stdout
    trials = _trials(tmp_path)
    assert trials[killed.number].state == TrialState.FAIL  # interrupted: failed without an error
    assert lifecycle.ERROR_KEY not in trials[killed.number].user_attrs
    (retry,) = [t for t in trials if t.number > killed.number and t.state == TrialState.COMPLETE]
    assert retry.params == killed.params
    assert [row["status"] for row in _history(tmp_path)] == ["complete", "interrupted", "complete"]


@pytest.mark.slow
def test_two_jax_processes_train_each_candidate_together_and_process_0_records_it(data_dir, tmp_path):
    # The multi-process path of the worker loop LACS shares (studies.loop.run_worker): tested once, here.
    port = free_port()
    flags = [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", "--distributed_timeout_s=120"]
    workers = [_worker(tmp_path, data_dir, 1, *flags, f"--process_id={index}") for index in range(2)]
    outputs = run_to_end(workers, PROCESS_TIMEOUT_S)
    assert "best: trial 0" in outputs[0]
    assert "best:" not in outputs[1]  # process 1 neither records nor reports
    (trial,) = _trials(tmp_path)
    assert trial.state == TrialState.COMPLETE
    # The proxy run was one run of two processes: its metrics were logged once, by process 0.
    (metrics,) = (tmp_path / "trials").rglob("metrics.jsonl")
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()].count(2) >= 1
