"""Optuna plumbing shared by LACS and the architecture search: storage, study, and the life of a trial.

A study lives in a journal file in the workdir by default (worker processes on one machine share it)
or in PostgreSQL/MySQL (`--storage=postgresql://...`, workers on several machines). Every worker runs
the same loop against it, so several workers, a resumed sweep and a retried trial need no extra code:

- A running trial records a heartbeat (`last_heartbeat`, wall-clock seconds) every few seconds. A
  running trial whose heartbeat is older than `stale_after_s` belongs to a dead worker: any worker marks
  it failed without an `error` (the sign of "interrupted") and its point becomes free again.
- A trial that fails on its own (non-finite loss, out of memory, invalid model) is failed *with* an
  `error` user attribute and counts as done: rerunning the sweep does not retry it.
- Optuna's journal storage has no heartbeat of its own (its RDB storage has one), hence this one,
  which works the same on every storage.
- A database that goes away (a restart, a network blip) is waited for: every storage call is retried
  for up to `stale_after_s`, then the worker stops with `StorageUnreachable` (one `error: ...` line on
  the command line) and a rerun resumes. Waiting longer would be pointless: by then other workers
  count this one's trial as dead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import inspect
import itertools
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

JOURNAL_FILE = "optuna.journal"
HEARTBEAT_KEY = "last_heartbeat"
ERROR_KEY = "error"
DUPLICATE_KEY = "duplicate_of"
FINGERPRINT_KEY = "experiment_fingerprint"


@dataclasses.dataclass(frozen=True)
class Timing:
    """How workers notice each other: heartbeat period, silence that means dead, and the wait between checks."""

    heartbeat_s: float = 10.0
    stale_after_s: float = 120.0
    poll_s: float = 10.0


def open_storage(
    url: str | None, workdir: str, reconnect_s: float = Timing.stale_after_s
) -> optuna.storages.BaseStorage:
    """The journal file `workdir/optuna.journal`, or the database at `url` (postgresql://, mysql://, sqlite:///),
    whose calls wait up to `reconnect_s` for a database that went away."""
    if not url:
        os.makedirs(workdir, exist_ok=True)
        return optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(os.path.join(workdir, JOURNAL_FILE))
        )
    if not url.startswith(("postgresql", "mysql", "sqlite")):
        raise UserError(
            f"--storage={url!r}: expected a database URL (postgresql://..., mysql://..., sqlite:///...); "
            f"leave it unset for the journal file {JOURNAL_FILE} in the workdir"
        )
    return ReconnectingStorage(url, reconnect_s)


class StorageUnreachable(ConnectionError):
    """The study's database stayed out of reach; an `OSError`, so command lines print it as one line."""


def _connection_lost(error: BaseException) -> bool:
    """Whether `error` (or what caused it: Optuna wraps SQLAlchemy's errors) says the database is out of reach.

    SQLAlchemy's OperationalError is the DB-API's "not the program's fault" class: refused or dropped
    connections, a server shutting down, also deadlocks and locked SQLite files; all pass if retried.
    """
    import sqlalchemy.exc

    while error is not None:
        if isinstance(error, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return True
        if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
            return True
        error = error.__cause__
    return False


def _schema_race(error: BaseException) -> bool:
    """Workers that open a new database together each create Optuna's tables; all but one fail with a
    unique violation (PostgreSQL's pg_type index), and a second try finds the tables."""
    import sqlalchemy.exc

    return isinstance(error, sqlalchemy.exc.IntegrityError)


_retrying = threading.local()  # set while a thread is inside a retried call: nested calls do not retry again


class ReconnectingStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage whose calls are retried while the database is out of reach, for up to
    `reconnect_s` seconds; then `StorageUnreachable`.

    Each call of the storage is one transaction, so a retried call repeats nothing that was committed
    (unless the connection broke during the commit itself, which a retry cannot tell apart).
    `pool_pre_ping` replaces connections that a server restart closed before they are used.
    """

    def __init__(self, url: str, reconnect_s: float):
        from sqlalchemy.engine import make_url

        self._shown_url = make_url(url).render_as_string(hide_password=True)
        self._reconnect_s = reconnect_s
        # Connects, and creates Optuna's tables in a new database.
        self._retry(optuna.storages.RDBStorage.__init__, url, engine_kwargs={"pool_pre_ping": True}, also=_schema_race)

    def _retry(self, method, *args, also=lambda error: False, **kwargs):
        """`method(self, *args, **kwargs)`, called again while the database is out of reach (or `also(error)`)."""
        if getattr(_retrying, "active", False):  # a call made by a retried call: the outer one retries
            return method(self, *args, **kwargs)
        _retrying.active = True
        try:
            return self._call_until_deadline(functools.partial(method, self, *args, **kwargs), also)
        finally:
            _retrying.active = False

    def _call_until_deadline(self, call, also):
        deadline, lost_since = time.monotonic() + self._reconnect_s, None
        for attempt in itertools.count():
            try:
                result = call()
            except Exception as error:
                if not (_connection_lost(error) or also(error)):
                    raise
                left_s = deadline - time.monotonic()
                if left_s <= 0:
                    raise self._unreachable(error) from error
                if lost_since is None and _connection_lost(error):  # a schema race is not worth a warning
                    lost_since = time.monotonic()
                    logging.warning(
                        "the study's database %s: %s; retrying for up to %g s",
                        self._shown_url,
                        _reason(error),
                        self._reconnect_s,
                    )
                time.sleep(min(0.5 * 2**attempt, 5.0, left_s))
                continue
            if lost_since is not None:
                logging.warning(
                    "the study's database %s is back after %.0f s", self._shown_url, time.monotonic() - lost_since
                )
            return result

    def _unreachable(self, error: BaseException) -> StorageUnreachable:
        return StorageUnreachable(
            f"the study's database {self._shown_url} stayed out of reach for {self._reconnect_s:g} s "
            f"({_reason(error)}); what the workers finished is stored there: once it is back, rerun the same command "
            "to resume"
        )


def _reason(error: BaseException) -> str:
    """The database driver's own first line (Optuna's wrapper says only that a commit failed)."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = str(getattr(error, "orig", None) or error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _retried(method):
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        return self._retry(method, *args, **kwargs)

    return call


# Every method RDBStorage defines: the public storage API and the private ones Optuna's cache calls
# (`_get_trials`, `_create_new_trial`, ...). Static and class methods are left alone (no connection).
for _name, _method in vars(optuna.storages.RDBStorage).items():
    if inspect.isfunction(_method) and not _name.startswith("__"):
        setattr(ReconnectingStorage, _name, _retried(_method))


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
