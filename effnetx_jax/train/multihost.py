"""What the processes of a run must agree on: the config, the step at which a preemption stops them, and
what process 0 decides for all of them (the next point of a sweep)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import threading
from collections.abc import Callable, Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils

from effnetx_jax.errors import UserError


def config_fingerprint(config) -> np.ndarray:
    """The config's SHA-256 as eight uint32 words (arrays, so processes can compare them)."""
    digest = hashlib.sha256(config.to_json(sort_keys=True).encode()).digest()
    return np.frombuffer(digest, dtype=np.uint32)


def check_same_config(config) -> None:
    """Fails on every process unless all processes run the same config (a hash compared across them)."""
    if jax.process_count() == 1:
        return
    fingerprints = np.asarray(multihost_utils.process_allgather(config_fingerprint(config)))
    differing = [
        index for index, fingerprint in enumerate(fingerprints) if not np.array_equal(fingerprint, fingerprints[0])
    ]
    if differing:
        raise UserError(
            f"processes {differing} run a different config from process 0 (the config hashes differ); every "
            "process must run the same command with the same config file and overrides"
        )


def broadcast_from_process_0(payload):
    """Process 0's `payload` (anything JSON can encode) on every process; the others' argument is ignored."""
    if jax.process_count() == 1:
        return payload
    encoded = np.frombuffer(json.dumps(payload).encode(), dtype=np.uint8)
    # Two broadcasts: the length first, so that every process passes an array of the same shape.
    length = int(multihost_utils.broadcast_one_to_all(np.int32(encoded.size)))
    buffer = np.zeros(length, np.uint8)
    if jax.process_index() == 0:
        buffer[:] = encoded
    return json.loads(np.asarray(multihost_utils.broadcast_one_to_all(buffer)).tobytes())


def first_problem(problem: str | None) -> str | None:
    """`problem` if this process has one, else another process's (named by its index), else None: a
    decision every process takes alike, when each found its own answer (e.g. reading its shards)."""
    if jax.process_count() == 1:
        return problem
    failed = np.asarray(multihost_utils.process_allgather(np.int32(problem is not None))).ravel()
    if problem is None and failed.any():
        return f"process {int(np.argmax(failed))} could not read it"
    return problem


def barrier(name: str) -> None:
    """Waits until every process got here (after process 0 changed files the others read next)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


@contextlib.contextmanager
def preemption_check() -> Iterator[Callable[[int], bool]]:
    """Yields `preempted(step)`: True at the step where the run should checkpoint and stop.

    One process: true once SIGTERM has arrived. Several: JAX's preemption sync manager (started by
    `jax.distributed.initialize`, which handles SIGTERM itself) picks a step at which every process
    answers True, so they all save the same checkpoint together.
    """
    if jax.process_count() > 1:
        yield multihost_utils.reached_preemption_sync_point
        return
    received = threading.Event()

    def preempted(step: int) -> bool:
        return received.is_set()

    if threading.current_thread() is not threading.main_thread():
        yield preempted  # signal handlers can only be installed from the main thread
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: received.set())
    try:
        yield preempted
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def explain_peer_failures(checkpoint_directory: str) -> Iterator[None]:
    """Turns a failed cross-process operation into an error that says what to do.

    When a process dies, the others fail in their next collective (gloo: "Connection closed by
    peer") or, at the latest, when JAX's heartbeat timeout declares it dead.
    """
    try:
        yield
    except jax.errors.JaxRuntimeError as error:
        if jax.process_count() == 1:
            raise
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise RuntimeError(
            f"process {jax.process_index()}: an operation across processes failed, so another process failed or "
            f"was killed ({first_line}). Restart every process with the same command; the run resumes from the "
            f"last complete checkpoint in {checkpoint_directory}."
        ) from error
