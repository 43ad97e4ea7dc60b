"""LACS as a kind of study for the shared worker loop (`studies.loop`): claim a free grid point, evaluate it.

The grid is Optuna's `GridSampler` with the experiment's seed, so every worker shuffles it the same way
and the first trials map one-to-one onto grid points. A claimed point that another worker already runs
or finished (possible after retries) is pruned as a duplicate before anything is trained.
"""

from __future__ import annotations

import dataclasses
import os
import time

import ml_collections
import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from effnetx_jax.studies import Timing, candidates, lifecycle, loop
from effnetx_jax.studies.lacs import experiment
from effnetx_jax.studies.lacs.experiment import COEFFICIENTS, Point
from effnetx_jax.studies.lacs.family import scale_model

BASE_LATENCY_KEY = "base_latency_ms"


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler, minus its `study.stop()` after the last point: that call works only inside
    `study.optimize`, and here the worker loop decides when the grid is done (`Sweep.claim`)."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def open_lacs_study(config: ml_collections.ConfigDict, storage) -> optuna.Study:
    sampler = _GridSampler({name: list(config.grid[name]) for name in COEFFICIENTS}, seed=config.seed)
    return lifecycle.open_study(config.name, storage, sampler, config)


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


def _classify(trials, grid: list[Point]):
    done = {point_of(t) for t in trials if lifecycle.is_done(t)}
    running = {point_of(t) for t in trials if t.state == TrialState.RUNNING}
    interrupted = {point_of(t) for t in trials if t.state == TrialState.FAIL and not lifecycle.is_done(t)}
    free = [p for p in grid if p not in done and p not in running]
    return running, interrupted, free


@dataclasses.dataclass(frozen=True)
class Sweep:
    """LACS as a kind of study (`loop.Kind`): each trial is a grid point."""

    config: ml_collections.ConfigDict
    workdir: str
    base_ms: float  # the base model's latency (`base_latency_ms`)

    def claim(self, study: optuna.Study, timing: Timing, log) -> loop.Claim | None:
        """A new trial on a point nobody has done or is doing; None once every point is done.

        Waits while the only points left are running elsewhere: they finish, or their worker's
        heartbeat goes stale and they become free again.
        """
        grid = experiment.grid_points(self.config)
        while True:
            lifecycle.fail_stale_trials(study, timing.stale_after_s)
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
            trial = study.ask(_distributions(self.config))
            point = point_of(trial)
            others = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number and point_of(t) == point]
            taken = [t.number for t in others if t.state == TrialState.RUNNING or lifecycle.is_done(t)]
            if not taken:
                return loop.Claim(trial, point)
            trial.set_user_attr(lifecycle.DUPLICATE_KEY, taken[0])
            study.tell(trial, state=TrialState.PRUNED)

    def evaluate(self, point: Point, outcome: dict) -> None:
        """Scales, checks, measures and proxy-trains one point; skipped if the constraint rejects it."""
        config, point = self.config, tuple(point)
        alpha, beta, gamma = point
        outcome.update(alpha=alpha, beta=beta, gamma=gamma, flops_ratio=round(experiment.flops_ratio(point), 4))
        model = scale_model(config.model, point)
        outcome.update(width=model.width, depth=model.depth, resolution=model.resolution)
        reason = experiment.flops_violation(point, config.constraint)
        if reason:
            outcome.update(status="skipped", reason=reason)
            return
        outcome["gflops"] = float(f"{candidates.gflops(model):.4g}")
        outcome["latency_ms"] = candidates.measure_latency(model, config.latency)
        outcome["latency_ratio"] = round(outcome["latency_ms"] / self.base_ms, 4)
        reason = experiment.latency_violation(outcome["latency_ms"], self.base_ms, config.constraint)
        if reason:
            outcome.update(status="skipped", reason=reason)
            return
        trial_dir = os.path.join(self.workdir, "trials", point_dir(point))
        outcome.update(candidates.proxy_train(config.proxy, model, trial_dir, config.objective.metric))
        target = experiment.target_latency_ms(config, self.base_ms)
        outcome["reward"] = candidates.reward(
            outcome["accuracy"], outcome["latency_ms"], target, config.objective.exponent
        )

    def objective_values(self, outcome: dict) -> float:
        return outcome["reward"]

    def progress(self, study: optuna.Study, trial: optuna.Trial, outcome: dict, evaluated: int) -> str:
        total = len(experiment.grid_points(self.config))
        finished = sum(lifecycle.is_done(t) for t in study.get_trials(deepcopy=False))
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
            f"{outcome['gflops']:.4g} GFLOPs, latency {outcome['latency_ms']:.1f} ms "
            f"({outcome['latency_ratio']:.2f}x), {self.config.objective.metric} {outcome['accuracy']:.4f}, "
            f"reward {outcome['reward']:.4f} (best {best:.4f}), proxy training {outcome['proxy_train_s']:.0f} s"
        )
