"""One writer per workdir: a lock file naming the run that holds it, so a second run refuses at start.

`workdir/lock.json` holds the holder's host, pid and start time. It is created atomically (`O_EXCL`),
refreshed every `HEARTBEAT_S` while the run lives and removed when it ends. A lock is stale, and the
next run takes it over, when its holder is dead: on the same host, no process has its pid; on another
host (a shared file system), its heartbeat is older than `STALE_AFTER_S`. A multi-host run holds one
lock: process 0 takes it and tells the others whether it succeeded, so all of them stop or none does.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import jax
from absl import logging

from effnetx_jax.errors import UserError
from effnetx_jax.train import multihost

LOCK_FILE = "lock.json"
HEARTBEAT_S = 30.0
# A holder on another host cannot be asked whether it lives; ten missed heartbeats mean it does not.
STALE_AFTER_S = 10 * HEARTBEAT_S


class WorkdirLocked(UserError):
    """Another live run writes to this workdir."""


def _describe(holder: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"process {holder.get('pid')} on {holder.get('host')} (started {started})"


def _read(path: str) -> dict | None:
    """The lock's holder, or None if there is no lock; an unreadable lock (a holder that died while
    writing it) counts as a dead holder's."""
    try:
        with open(path) as file:
            holder = json.load(file)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _holder_is_dead(holder: dict, path: str) -> bool:
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, owned by another user
            return False
        return False
    try:
        return time.time() - os.path.getmtime(path) > STALE_AFTER_S
    except FileNotFoundError:
        return True


def _try_create(path: str, holder: dict) -> bool:
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as file:
        json.dump(holder, file)
    return True


def _acquire(path: str, holder: dict) -> str | None:
    """Takes the lock at `path` for `holder`; returns None, or why it cannot (the live holder)."""
    while not _try_create(path, holder):
        current = _read(path)
        if current is None:
            continue  # released meanwhile
        if not _holder_is_dead(current, path):
            return f"held by {_describe(current)}"
        # Renamed aside first, so that of two runs taking over the same stale lock only one succeeds.
        stale = f"{path}.stale-{holder['token']}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, stale)
            os.remove(stale)
            logging.warning("Took over the lock of %s, which is no longer running.", _describe(current))
    return None


def _release(path: str, token: str) -> None:
    if (_read(path) or {}).get("token") == token:  # never remove a lock another run took over
        os.remove(path)


def _heartbeat(path: str, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        with contextlib.suppress(OSError):
            os.utime(path)


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
    """Holds the workdir's lock for the run inside; raises `WorkdirLocked` on every process if another
    run holds it. A workdir this call had to create and the run left empty is removed again."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UserError(f"--workdir {workdir} is a file; give a directory (it is created if missing)")
    created = not os.path.exists(workdir)
    path = os.path.join(workdir, LOCK_FILE)
    token = uuid.uuid4().hex
    refusal = None
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), "token": token}
        refusal = _acquire(path, holder)
    refusal = multihost.broadcast_from_process_0(refusal)
    if refusal is not None:
        raise WorkdirLocked(
            f"workdir {os.path.abspath(workdir)} is in use: {refusal}. Wait for that run to end, stop it, "
            f"or give another --workdir (if that process is not a training run, remove {path})"
        )
    if jax.process_index() != 0:
        yield
        return
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(path, stop), name="workdir-lock-heartbeat", daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        _release(path, token)
        if created and not os.listdir(workdir):
            os.rmdir(workdir)
