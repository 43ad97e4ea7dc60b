"""One LACS worker: claim a free grid point, evaluate it, record it; until every point is done.

Any number of workers (processes, machines) run this loop against one Optuna study. The grid is
Optuna's `GridSampler` with the experiment's seed, so every worker shuffles it the same way and the
first trials map one-to-one onto grid points. A claimed point that another worker already runs or
finished (possible after retries) is pruned as a duplicate before anything is trained. On a
multi-host slice only process 0 talks to the study; it broadcasts each point and all processes
measure and train it together.
"""

from __future__ import annotations

import contextlib
import os
import time

import jax
import ml_collections
import optuna
from absl import logging
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from effnetx_jax import candidates, studies
from effnetx_jax.lacs import experiment
from effnetx_jax.lacs.experiment import COEFFICIENTS, Point
from effnetx_jax.lacs.family import scale_model
from effnetx_jax.studies import Timing
from effnetx_jax.train import multihost

BASE_LATENCY_KEY = "base_latency_ms"


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler, minus its `study.stop()` after the last point: that call works only inside
    `study.optimize`, and here the worker loop decides when the grid is done (`claim_next_point`)."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def open_lacs_study(config: ml_collections.ConfigDict, storage) -> optuna.Study:
    sampler = _GridSampler({name: list(config.grid[name]) for name in COEFFICIENTS}, seed=config.seed)
    return studies.open_study(config.name, storage, sampler, config)


def _distributions(config) -> dict[str, CategoricalDistribution]:
    return {name: CategoricalDistribution([float(v) for v in config.grid[name]]) for name in COEFFICIENTS}


def point_of(trial) -> Point | None:
    if not all(name in trial.params for name in COEFFICIENTS):
        return None
    return tuple(float(trial.params[name]) for name in COEFFICIENTS)


def point_dir(point: Point) -> str:
    return "_".join(f"{name}{value:g}" for name, value in zip(COEFFICIENTS, point, strict=True))


def base_latency_ms(study: optuna.Study, config) -> float:
    """The base model's latency, measured once per study (by the first worker that needs it)."""
    if BASE_LATENCY_KEY not in study.user_attrs:
        latency = candidates.measure_latency(config.model, config.latency)
        study.set_user_attr(BASE_LATENCY_KEY, latency)
        study.set_user_attr("base_gflops", candidates.gflops(config.model))
    return study.user_attrs[BASE_LATENCY_KEY]


def evaluate_point(config, point: Point, base_ms: float, workdir: str) -> dict:
    """Scales, checks, measures and proxy-trains one point; returns what the study records.

    `status` is 'complete', 'skipped' (the constraint rejects the point) or 'failed' (with `error`).
    """
    alpha, beta, gamma = point
    row = {"alpha": alpha, "beta": beta, "gamma": gamma, "flops_ratio": round(experiment.flops_ratio(point), 4)}
    try:
        model = scale_model(config.model, point)
        row.update(width=model.width, depth=model.depth, resolution=model.resolution)
        reason = experiment.flops_violation(point, config.constraint)
        if reason:
            return {**row, "status": "skipped", "reason": reason}
        row["gflops"] = float(f"{candidates.gflops(model):.4g}")
        row["latency_ms"] = candidates.measure_latency(model, config.latency)
        row["latency_ratio"] = round(row["latency_ms"] / base_ms, 4)
        reason = experiment.latency_violation(row["latency_ms"], base_ms, config.constraint)
        if reason:
            return {**row, "status": "skipped", "reason": reason}
        trial_dir = os.path.join(workdir, "trials", point_dir(point))
        row.update(candidates.proxy_train(config.proxy, model, trial_dir, config.objective.metric))
    except candidates.Interrupted:
        raise
    except Exception as error:  # any failure of one point is recorded and the sweep goes on
        logging.exception("LACS point %s failed", point)
        return {**row, "status": "failed", "error": studies.describe_error(error)}
    target = experiment.target_latency_ms(config, base_ms)
    row["reward"] = candidates.reward(row["accuracy"], row["latency_ms"], target, config.objective.exponent)
    return {**row, "status": "complete"}


def _classify(trials, grid: list[Point]):
    done = {point_of(t) for t in trials if studies.is_done(t)}
    running = {point_of(t) for t in trials if t.state == TrialState.RUNNING}
    interrupted = {point_of(t) for t in trials if t.state == TrialState.FAIL and not studies.is_done(t)}
    free = [p for p in grid if p not in done and p not in running]
    return running, interrupted, free


def claim_next_point(study: optuna.Study, config, timing: Timing) -> optuna.Trial | None:
    """A new trial on a point nobody has done or is doing; None once every point is done.

    Waits while the only points left are running elsewhere: they finish, or their worker's
    heartbeat goes stale and they become free again.
    """
    grid = experiment.grid_points(config)
    while True:
        studies.fail_stale_trials(study, timing.stale_after_s)
        trials = study.get_trials(deepcopy=False)
        running, interrupted, free = _classify(trials, grid)
        if not free:
            if not running:
                return None
            time.sleep(timing.poll_s)
            continue
        # The sampler counts an interrupted trial's point as visited: queue it again explicitly.
        retry = [p for p in free if p in interrupted]
        if retry and not any(t.state == TrialState.WAITING for t in trials):
            study.enqueue_trial(dict(zip(COEFFICIENTS, retry[0], strict=True)))
        trial = study.ask(_distributions(config))
        point = point_of(trial)
        others = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number and point_of(t) == point]
        taken = [t.number for t in others if t.state == TrialState.RUNNING or studies.is_done(t)]
        if not taken:
            return trial
        trial.set_user_attr(studies.DUPLICATE_KEY, taken[0])
        study.tell(trial, state=TrialState.PRUNED)


def record(study: optuna.Study, trial: optuna.Trial, outcome: dict) -> None:
    for key, value in outcome.items():
        if key not in ("status", "error"):
            trial.set_user_attr(key, value)
    if outcome["status"] == "complete":
        study.tell(trial, outcome["reward"])
    elif outcome["status"] == "skipped":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        studies.record_failure(study, trial, outcome["error"])


def _progress(study: optuna.Study, config, trial: optuna.Trial, outcome: dict) -> str:
    total = len(experiment.grid_points(config))
    finished = sum(studies.is_done(t) for t in study.get_trials(deepcopy=False))
    head = (
        f"[{finished}/{total}] trial {trial.number} alpha={outcome['alpha']:g} beta={outcome['beta']:g} "
        f"gamma={outcome['gamma']:g}: "
    )
    if outcome["status"] == "skipped":
        return head + f"skipped, {outcome['reason']}"
    if outcome["status"] == "failed":
        return head + f"FAILED, {outcome['error']}"
    best = max(t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    return head + (
        f"{outcome['gflops']:.4g} GFLOPs, latency {outcome['latency_ms']:.1f} ms ({outcome['latency_ratio']:.2f}x), "
        f"{config.objective.metric} {outcome['accuracy']:.4f}, reward {outcome['reward']:.4f} (best {best:.4f}), "
        f"proxy training {outcome['proxy_train_s']:.0f} s"
    )


def run_worker(config, workdir: str, study: optuna.Study | None, timing: Timing, log=print) -> int:
    """Evaluates points until the grid is done; returns how many this worker evaluated.

    `study` is None on processes other than 0 of a multi-host run: they follow process 0's broadcasts.
    """
    is_leader = jax.process_index() == 0
    base_ms = multihost.broadcast_from_process_0(base_latency_ms(study, config) if is_leader else None)
    evaluated = 0
    while True:
        trial = claim_next_point(study, config, timing) if is_leader else None
        point = multihost.broadcast_from_process_0(point_of(trial) if trial else None)
        if point is None:
            return evaluated
        point = tuple(point)
        beating = studies.heartbeat(trial, timing.heartbeat_s) if is_leader else contextlib.nullcontext()
        try:
            with beating:
                outcome = evaluate_point(config, point, base_ms, workdir)
        except (candidates.Interrupted, KeyboardInterrupt):
            if is_leader:  # failed without an error: interrupted, so a rerun evaluates it again
                study.tell(trial, state=TrialState.FAIL)
            raise
        evaluated += 1
        if is_leader:
            with studies.unless_taken_over(trial, log):
                record(study, trial, outcome)
                log(_progress(study, config, trial, outcome))
