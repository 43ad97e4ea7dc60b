"""A study and the life of its trials, the same on every storage.

- A running trial records a heartbeat (`last_heartbeat`, wall-clock seconds) every few seconds. A
  running trial whose heartbeat is older than `stale_after_s` belongs to a dead worker: any worker marks
  it failed without an `error` (the sign of "interrupted") and its candidate becomes free again.
- A trial that fails on its own (non-finite loss, out of memory, invalid model) is failed *with* an
  `error` user attribute and counts as done: rerunning the study does not retry it.
- Optuna's journal storage has no heartbeat of its own (its RDB storage has one), hence this one,
  which works the same on every storage.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator

import optuna
from absl import logging
from optuna.trial import TrialState

from effnetx_jax.errors import UserError
from effnetx_jax.studies.storage import StorageUnreachable

HEARTBEAT_KEY = "last_heartbeat"
ERROR_KEY = "error"
DUPLICATE_KEY = "duplicate_of"
FINGERPRINT_KEY = "experiment_fingerprint"


def fingerprint(config) -> str:
    return hashlib.sha256(config.to_json_best_effort(sort_keys=True).encode()).hexdigest()


def open_study(
    name: str, storage, sampler: optuna.samplers.BaseSampler, config, directions=("maximize",)
) -> optuna.Study:
    """Creates the study on first use, loads it afterwards; refuses a study made by another experiment config."""
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, directions=list(directions), load_if_exists=True
    )
    expected = fingerprint(config)
    found = study.user_attrs.get(FINGERPRINT_KEY)
    if found is None:
        study.set_user_attr(FINGERPRINT_KEY, expected)
        study.set_user_attr("experiment_config", json.loads(config.to_json_best_effort(sort_keys=True)))
    elif found != expected:
        raise UserError(
            f"study {name!r} in this storage was created by a different experiment config (the settings differ, "
            "so its results do not apply); use a new --workdir, another --study_name, or the original config"
        )
    return study


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.contextmanager
def heartbeat(trial: optuna.Trial, interval_s: float) -> Iterator[None]:
    """Records `last_heartbeat` on `trial` now and every `interval_s` seconds until the block ends."""
    trial.set_user_attr("worker", worker_name())
    trial.set_user_attr(HEARTBEAT_KEY, time.time())
    stop = threading.Event()

    def beat():
        while not stop.wait(interval_s):
            try:
                trial.set_user_attr(HEARTBEAT_KEY, time.time())
            except StorageUnreachable as error:  # the database is down: the next beat tries again
                logging.warning("heartbeat of trial %d: %s", trial.number, error)
            except optuna.exceptions.UpdateFinishedTrialError:  # taken over: `unless_taken_over` reports it
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-trial-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def unless_taken_over(trial: optuna.Trial, log) -> Iterator[None]:
    """Runs the block that records `trial`'s result. If another worker failed the trial as dead meanwhile
    (this worker's heartbeat was silent for longer than `stale_after_s`: a stalled machine, a long
    database outage), the trial is theirs to retry: the result is dropped with a log line, not a crash."""
    try:
        yield
    except optuna.exceptions.UpdateFinishedTrialError:
        log(
            f"trial {trial.number}: another worker took it over (no heartbeat from here for longer than its "
            "--stale_after_s), so this result is dropped and the trial evaluated again; raise --stale_after_s if "
            "this machine stalls"
        )


def _last_sign_of_life(trial: optuna.trial.FrozenTrial) -> float:
    if HEARTBEAT_KEY in trial.user_attrs:
        return trial.user_attrs[HEARTBEAT_KEY]
    return trial.datetime_start.timestamp() if trial.datetime_start else 0.0


def fail_stale_trials(study: optuna.Study, stale_after_s: float) -> list[int]:
    """Marks running trials without a heartbeat for `stale_after_s` as failed (interrupted); their numbers."""
    now = time.time()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if now - _last_sign_of_life(trial) > stale_after_s:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, ValueError, RuntimeError):
                study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
                failed.append(trial.number)
    return failed


def is_done(trial: optuna.trial.FrozenTrial) -> bool:
    """Finished for good: complete, skipped (pruned, not as a duplicate) or failed with a recorded error."""
    if trial.state == TrialState.COMPLETE:
        return True
    if trial.state == TrialState.PRUNED:
        return DUPLICATE_KEY not in trial.user_attrs
    return trial.state == TrialState.FAIL and ERROR_KEY in trial.user_attrs


def describe_error(error: BaseException, limit: int = 500) -> str:
    """`Type: first line of the message`, short enough for a table cell and the study's storage."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def record_failure(study: optuna.Study, trial: optuna.Trial, message: str) -> None:
    """Fails `trial` with its error: done for good, unlike an interrupted trial (failed without one)."""
    trial.set_user_attr(ERROR_KEY, message)
    study.tell(trial, state=TrialState.FAIL)
