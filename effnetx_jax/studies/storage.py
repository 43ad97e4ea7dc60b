"""Where a study lives: the journal file `optuna.journal` in the workdir, or a database at `--storage`.

A database that goes away (a restart, a network blip) is waited for: every storage call is retried for
up to `stale_after_s`, then the worker stops with `StorageUnreachable` (one `error: ...` line on the
command line) and a rerun resumes. Waiting longer would be pointless: by then other workers count this
one's trial as dead.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import os
import threading
import time

import optuna
from absl import logging

from effnetx_jax.errors import UserError
from effnetx_jax.studies import Timing

JOURNAL_FILE = "optuna.journal"


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

    # Both links: a query after a dropped connection fails with PendingRollbackError, raised while
    # handling (not from) the OperationalError of the drop.
    while error is not None:
        if isinstance(error, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return True
        if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
            return True
        error = error.__cause__ or error.__context__
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
                self._discard_session()
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

    def _discard_session(self) -> None:
        """Drops this thread's session: one whose connection broke stays in a failed transaction, and
        every later call on it would fail again (`PendingRollbackError`) even with the database back."""
        scoped = getattr(self, "scoped_session", None)  # not yet there while __init__ connects
        if scoped is not None:
            with contextlib.suppress(Exception):  # the broken connection may fail its rollback too
                scoped.remove()

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
