"""The search as a kind of study for the shared worker loop (`lifecycle.loop`): ask the sampler for a
candidate, evaluate it; until the budget is spent.

The sampler (aging evolution or NSGA-II) reads the finished trials, so workers need no other
coordination. Before anything is trained, a candidate is
- rejected with its reason if its decisions describe no model (pruned, `reason`);
- answered from the cache if a trial with the same canonical architecture finished (`cached_from`);
- pruned as a duplicate if that architecture is being trained by another worker right now.
A dead worker's trial (stale heartbeat) is queued again with the same decisions; its proxy run
resumes from the checkpoint in `trials/<canonical key>`.
"""

from __future__ import annotations

import dataclasses
import os
import time

import ml_collections
import optuna
from optuna.trial import TrialState

from effnetx_jax.models import architecture, costs
from effnetx_jax.studies import Timing, candidates, lifecycle, loop
from effnetx_jax.studies.search import experiment
from effnetx_jax.studies.search.space import InvalidCandidate, SearchSpace, canonical_key

STARTED_KEY = "started_at"
TARGET_KEY = "target_latency_ms"
REFERENCE_KEY = "reference"
CANONICAL_KEY = "canonical"
CACHED_KEY = "cached_from"
REASON_KEY = "reason"
# A sampler that keeps proposing invalid candidates (NSGA-II in a mostly invalid space) stops the worker.
MAX_INVALID_IN_A_ROW = 100
# What a finished candidate records, and what a cached copy takes over from it.
RESULT_KEYS = ("accuracy", "latency_ms", "measured_ms", "compile_s", "gflops", "params", "reward", "proxy_train_s")


def prepare_study(study: optuna.Study, config) -> None:
    """On a new study: note the start time and queue the reference models, so they are trained first."""
    if STARTED_KEY in study.user_attrs:
        return
    study.set_user_attr(STARTED_KEY, time.time())
    space = experiment.space_of(config)
    for name in config.references:
        study.enqueue_trial(
            space.from_model(experiment.reference_model(config, name)), user_attrs={REFERENCE_KEY: name}
        )


def latency(model, config) -> dict:
    """`latency_ms` as the config says (measured here, or analytic), with the compile time measured here."""
    measured = candidates.benchmark(model, config.latency)
    result = {"measured_ms": measured["median_ms"], "compile_s": measured["compile_s"]}
    if config.latency.source == "analytic":
        result["latency_ms"] = round(candidates.analytic_latency_ms(model, config.latency), 4)
    else:
        result["latency_ms"] = measured["median_ms"]
    return result


def target_latency_ms(study: optuna.Study, config) -> float:
    """The reward's T: as configured, or the first reference model's latency, measured once per study."""
    if config.objective.target_latency_ms:
        return config.objective.target_latency_ms
    if TARGET_KEY not in study.user_attrs:
        reference = experiment.reference_model(config, config.references[0])
        study.set_user_attr(TARGET_KEY, latency(reference, config)["latency_ms"])
    return study.user_attrs[TARGET_KEY]


def budget_spent(study: optuna.Study, config, trials) -> str | None:
    """Why no new candidate may start, or None. Running trials count, so a worker waits for them."""
    budget = config.budget
    if budget.max_hours and time.time() > study.user_attrs[STARTED_KEY] + budget.max_hours * 3600:
        return f"budget.max_hours={budget.max_hours:g} has passed since the search started"
    used = sum(_counts(t) for t in trials)
    if budget.max_trials and used >= budget.max_trials:
        return f"{used} candidates reached budget.max_trials={budget.max_trials}"
    return None


def _finished(trial) -> bool:
    """Trained, cached or failed for good: done, and not merely rejected (invalid) or skipped."""
    return lifecycle.is_done(trial) and trial.state != TrialState.PRUNED


def _counts(trial) -> bool:
    """Whether a trial uses the budget: finished or running."""
    return trial.state == TrialState.RUNNING or _finished(trial)


def _decisions(trial) -> dict:
    """A trial's decisions: its parameters, or for a queued trial the ones it was queued with."""
    return trial.params or trial.system_attrs.get("fixed_params", {})


def _requeue_interrupted(study: optuna.Study, trials) -> None:
    """Queues the decisions of a dead worker's trial again, unless a later trial has or will have them.

    Only a trial whose candidate was complete (it has a canonical key) is queued again: a worker that
    died while the sampler was still deciding left a partial candidate, and the sampler proposes anew.
    """
    waiting_or_later = [t for t in trials if t.state == TrialState.WAITING or _counts(t)]
    for trial in trials:
        if trial.state != TrialState.FAIL or lifecycle.is_done(trial) or CANONICAL_KEY not in trial.user_attrs:
            continue
        if not any(other.number > trial.number and _decisions(other) == trial.params for other in waiting_or_later):
            study.enqueue_trial(trial.params, user_attrs=_reference_attr(trial))
            return


def _reference_attr(trial) -> dict:
    return {REFERENCE_KEY: trial.user_attrs[REFERENCE_KEY]} if REFERENCE_KEY in trial.user_attrs else {}


def _answer_without_training(study: optuna.Study, trial: optuna.Trial, key: str) -> str | None:
    """Cache hit (copy the results) or duplicate of a running trial (prune); what happened, or None."""
    same = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.number != trial.number and t.user_attrs.get(CANONICAL_KEY) == key
    ]
    finished = [t for t in same if _finished(t)]
    if finished:
        source = finished[0]
        trial.set_user_attr(CACHED_KEY, source.number)
        for name in RESULT_KEYS:
            if name in source.user_attrs:
                trial.set_user_attr(name, source.user_attrs[name])
        if source.state == TrialState.COMPLETE:
            study.tell(trial, source.values)
            return f"same architecture as trial {source.number}: cached, reward {source.user_attrs['reward']:.4f}"
        lifecycle.record_failure(study, trial, source.user_attrs[lifecycle.ERROR_KEY])
        return f"same architecture as trial {source.number}, which failed"
    running = [t.number for t in same if t.state == TrialState.RUNNING]
    if running:
        trial.set_user_attr(lifecycle.DUPLICATE_KEY, running[0])
        study.tell(trial, state=TrialState.PRUNED)
        return f"same architecture as trial {running[0]}, running elsewhere: skipped"
    return None


@dataclasses.dataclass
class Search:
    """The search as a kind of study (`loop.Kind`): each trial is a candidate the sampler proposes."""

    config: ml_collections.ConfigDict
    workdir: str
    target_ms: float  # the reward's T (`target_latency_ms`)
    space: SearchSpace = dataclasses.field(init=False)
    started: float = dataclasses.field(init=False, default_factory=time.time)  # for the ETA at this worker's pace

    def __post_init__(self):
        self.space = experiment.space_of(self.config)

    def claim(self, study: optuna.Study, timing: Timing, log) -> loop.Claim | None:
        """A new trial whose candidate (its decisions) needs training, or None once the budget is spent.

        Invalid candidates, cache hits and duplicates are recorded here, on the way.
        """
        decisions = self.space.decisions()
        invalid_in_a_row = 0
        while True:
            lifecycle.fail_stale_trials(study, timing.stale_after_s)
            trials = study.get_trials(deepcopy=False)
            reason = budget_spent(study, self.config, trials)
            if reason:
                if not any(t.state == TrialState.RUNNING for t in trials) or "max_hours" in reason:
                    log(f"budget spent: {reason}")
                    return None
                time.sleep(timing.poll_s)  # running trials may yet fail or go stale
                continue
            _requeue_interrupted(study, trials)
            trial = study.ask()
            candidate = {name: trial.suggest_categorical(name, choices) for name, choices in decisions.items()}
            try:
                model = self.space.to_model(candidate)
            except InvalidCandidate as error:
                trial.set_user_attr(REASON_KEY, str(error))
                study.tell(trial, state=TrialState.PRUNED)
                log(f"trial {trial.number}: invalid, {error}")
                invalid_in_a_row += 1
                if invalid_in_a_row >= MAX_INVALID_IN_A_ROW:
                    raise InvalidCandidate(
                        f"the sampler proposed {invalid_in_a_row} invalid candidates in a row; the last: {error}"
                    ) from None
                continue
            invalid_in_a_row = 0
            key = canonical_key(model)
            trial.set_user_attr(CANONICAL_KEY, key)
            trial.set_user_attr("blocks", list(model.blocks))
            answer = _answer_without_training(study, trial, key)
            if answer:
                log(f"trial {trial.number}: {answer}")
                continue
            return loop.Claim(trial, candidate)

    def evaluate(self, candidate: dict, outcome: dict) -> None:
        """Measures and proxy-trains one candidate, in `trials/<its canonical key>`."""
        config, model = self.config, self.space.to_model(candidate)
        outcome["gflops"] = float(f"{candidates.gflops(model):.4g}")
        outcome["params"] = costs.parameter_count(architecture(model))
        outcome.update(latency(model, config))
        trial_dir = os.path.join(self.workdir, "trials", canonical_key(model))
        outcome.update(candidates.proxy_train(config.proxy, model, trial_dir, config.objective.metric))
        outcome["reward"] = candidates.reward(
            outcome["accuracy"], outcome["latency_ms"], self.target_ms, config.objective.exponent
        )

    def objective_values(self, outcome: dict) -> list[float]:
        """The reward (aging evolution), or accuracy and latency (NSGA-II's two objectives)."""
        if self.config.algorithm.kind == "nsga2":
            return [outcome["accuracy"], outcome["latency_ms"]]
        return [outcome["reward"]]

    def progress(self, study: optuna.Study, trial: optuna.Trial, outcome: dict, evaluated: int) -> str:
        config = self.config
        trials = study.get_trials(deepcopy=False)
        used = sum(_counts(t) for t in trials)
        head = f"[{used}/{config.budget.max_trials or '?'}] trial {trial.number}"
        if REFERENCE_KEY in trial.user_attrs:
            head += f" ({trial.user_attrs[REFERENCE_KEY]})"
        if outcome["status"] == "failed":
            return f"{head}: FAILED, {outcome['error']}"
        rewarded = [t for t in trials if t.state == TrialState.COMPLETE and "reward" in t.user_attrs]
        best = max(rewarded, key=lambda t: t.user_attrs["reward"])
        return (
            f"{head}: reward {outcome['reward']:.4f}, {config.objective.metric} {outcome['accuracy']:.4f}, "
            f"latency {outcome['latency_ms']:.3g} ms, {outcome['gflops']:.3g} GFLOPs; best "
            f"{best.user_attrs['reward']:.4f} (trial {best.number}); {outcome['proxy_train_s']:.0f} s"
            f"{self._eta(study, used, evaluated)}"
        )

    def _eta(self, study: optuna.Study, used: int, evaluated: int) -> str:
        """Time left at this worker's pace: the remaining trials, or the time budget if that ends first."""
        budget, left_s = self.config.budget, []
        if budget.max_trials:
            left_s.append(max(0, budget.max_trials - used) * (time.time() - self.started) / evaluated)
        if budget.max_hours:
            left_s.append(max(0.0, study.user_attrs[STARTED_KEY] + budget.max_hours * 3600 - time.time()))
        return f", ETA {min(left_s) / 60:.0f} min"
