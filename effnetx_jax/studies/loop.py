"""The worker loop every study tool runs: claim a trial, evaluate it, record it; until the study is done.

Any number of workers (processes, machines) run this loop against one Optuna study. A `Kind` of study
(LACS's grid, the architecture search) says how a trial is claimed, evaluated and described; the loop
does the rest, alike for every kind:

- On a multi-host slice only process 0 talks to the study: it claims each trial and broadcasts its
  candidate, and all processes evaluate it together. Process 0 records the trial's heartbeat meanwhile.
- An evaluation that raises is recorded as failed with its error (done for good), and the loop goes on.
- An interrupted evaluation (SIGTERM during the proxy training, Ctrl-C) fails the trial without an
  error, so that it is evaluated again, and stops the worker. A killed worker's trial goes silent and
  another worker fails it (`lifecycle.fail_stale_trials`); each kind's `claim` queues it again.
- Process 0 records the outcome and prints the kind's progress line.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jax
import optuna
from absl import logging
from optuna.trial import TrialState

from effnetx_jax.studies import Timing, candidates, lifecycle
from effnetx_jax.studies.storage import open_storage
from effnetx_jax.train import multihost

Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Claim:
    """A new trial, and the candidate every process evaluates for it (JSON data: it is broadcast, and a
    tuple comes back as a list on the other processes)."""

    trial: optuna.Trial
    candidate: Any


class Kind(Protocol):
    """What one kind of study adds to the loop. `claim` and `progress` run on process 0 only, `evaluate`
    on every process."""

    def claim(self, study: optuna.Study, timing: Timing, log: Log) -> Claim | None:
        """A new trial whose candidate needs evaluating, or None once the study is done. Waits (polling every
        `timing.poll_s`) while what is left runs elsewhere, and queues again what dead workers left."""

    def evaluate(self, candidate: Any, outcome: dict) -> None:
        """Measures and trains `candidate`, adding each result to `outcome` as soon as it is known (an error
        part-way keeps them for the record). A candidate turned down untrained gets `status` 'skipped'."""

    def objective_values(self, outcome: dict) -> float | Sequence[float]:
        """The study's objective value(s) of a complete `outcome`."""

    def progress(self, study: optuna.Study, trial: optuna.Trial, outcome: dict, evaluated: int) -> str:
        """The line printed once `outcome` is recorded; `evaluated` counts this worker's evaluations so far."""


def is_leader() -> bool:
    """Process 0 of a multi-host run (or the only process): the one that talks to the study."""
    return jax.process_index() == 0


def device_name() -> str:
    """`platform:kind` of this process's first device, as the reports name it."""
    device = jax.devices()[0]
    return f"{device.platform}:{device.device_kind}"


def open_on_leader(
    open_study: Callable[[optuna.storages.BaseStorage], optuna.Study], url: str | None, workdir: str, timing: Timing
) -> optuna.Study | None:
    """On process 0, the study that `open_study` creates or joins in the storage at `url` (default: the
    journal file in `workdir`); None on the other processes."""
    return open_study(open_storage(url, workdir, timing.stale_after_s)) if is_leader() else None


def from_leader(study: optuna.Study | None, measure: Callable[[optuna.Study], Any]) -> Any:
    """`measure(study)` on process 0, broadcast to every process (e.g. a latency every reward needs)."""
    return multihost.broadcast_from_process_0(measure(study) if is_leader() else None)


def run_worker(kind: Kind, study: optuna.Study | None, timing: Timing, log: Log = print) -> int:
    """Evaluates candidates until `kind.claim` finds none; returns how many this worker evaluated.

    `study` is None on processes other than 0 of a multi-host run: they follow process 0's broadcasts.
    """
    evaluated = 0
    while True:
        claim = kind.claim(study, timing, log) if is_leader() else None
        candidate = multihost.broadcast_from_process_0(claim.candidate if claim else None)
        if candidate is None:
            return evaluated
        trial = claim.trial if claim else None
        outcome = _evaluate(kind, candidate, study, trial, timing)
        evaluated += 1
        if trial is not None:
            with lifecycle.unless_taken_over(trial, log):
                record(study, trial, outcome, kind)
                log(kind.progress(study, trial, outcome, evaluated))


def _evaluate(kind: Kind, candidate, study, trial: optuna.Trial | None, timing: Timing) -> dict:
    """`_outcome` under the trial's heartbeat (on process 0, which has the `trial`)."""
    beating = lifecycle.heartbeat(trial, timing.heartbeat_s) if trial is not None else contextlib.nullcontext()
    try:
        with beating:
            return _outcome(kind, candidate)
    except (candidates.Interrupted, KeyboardInterrupt):
        if trial is not None:  # failed without an error: interrupted, so a rerun evaluates it again
            study.tell(trial, state=TrialState.FAIL)
        raise


def _outcome(kind: Kind, candidate) -> dict:
    """What `kind.evaluate` found: `status` 'complete' unless it skipped the candidate, or 'failed' with the
    `error` it raised."""
    outcome = {}
    try:
        kind.evaluate(candidate, outcome)
    except candidates.Interrupted:
        raise
    except Exception as error:  # any failure of one candidate is recorded and the study goes on
        logging.exception("evaluating %s failed", candidate)
        return {**outcome, "status": "failed", "error": lifecycle.describe_error(error)}
    outcome.setdefault("status", "complete")
    return outcome


def record(study: optuna.Study, trial: optuna.Trial, outcome: dict, kind: Kind) -> None:
    """Stores `outcome` on `trial` (each result a user attribute) and ends the trial by its status: complete
    with `kind`'s objective values, skipped (pruned), or failed with its error (done for good)."""
    for key, value in outcome.items():
        if key not in ("status", "error"):
            trial.set_user_attr(key, value)
    if outcome["status"] == "complete":
        study.tell(trial, kind.objective_values(outcome))
    elif outcome["status"] == "skipped":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        lifecycle.record_failure(study, trial, outcome["error"])
