"""LACS and the search on a real PostgreSQL server (`--storage=postgresql://...`), shared as workers on
several machines would share it: two workers splitting the work through a database restart, a killed
worker's candidate retried by the other, and a database out of reach.

The server is a throw-away one on loopback (tests/postgres_server.py), started once per session; each
test gets a database of its own. Without PostgreSQL's server binaries the tests that need it are skipped.
"""

import itertools
import subprocess
import time

import pytest
import test_lacs
import test_search
from optuna.trial import TrialState

from effnetx_jax import cli
from effnetx_jax.studies import Timing, lifecycle
from effnetx_jax.studies.lacs.run import run_lacs
from effnetx_jax.studies.search import worker
from effnetx_jax.studies.storage import StorageUnreachable

from conftest import free_port, run_to_end, study_trials
from postgres_server import PostgresServer

STUDY = "digits_cpu"  # the study name of both tiny experiments
PROCESS_TIMEOUT_S = 400
_database_numbers = itertools.count()


@pytest.fixture(scope="session")
def postgres():
    """The session's PostgreSQL server; skips the test where PostgreSQL is not installed."""
    bin_dir = PostgresServer.find()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin or on PATH")
    server = PostgresServer(bin_dir).start()
    yield server
    server.close()


@pytest.fixture
def database(postgres) -> str:
    """The URL of a new, empty database on the session's server."""
    return postgres.create_database(f"study_{next(_database_numbers)}")


def _wait_for(condition, processes: list[subprocess.Popen]) -> None:
    """Polls `condition()` until it holds; fails if one of `processes` exits first."""
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    while not condition():
        for process in processes:
            assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"not reached within {PROCESS_TIMEOUT_S} s"
        time.sleep(0.5)


def _completed(trials) -> list:
    return [t for t in trials if t.state == TrialState.COMPLETE]


# test_lacs's grid of a killed worker and one more point: depth 1.4 builds the same network as 1.2 (two
# repeats), so it compiles nothing new. With three points, one is sure to train after the restart.
THREE_POINTS = {"alpha": (1.0, 1.2, 1.4), "beta": (1.0,), "gamma": (1.0,)}


@pytest.mark.slow
def test_two_lacs_workers_share_a_database_and_lose_nothing_when_it_restarts(data_dir, tmp_path, postgres, database):
    # Heartbeats every second: the worker that trains the last point is sure to reach for the database
    # while it is down.
    flags = [f"--storage={database}", "--poll_s=1", "--heartbeat_s=1"]
    workers = [test_lacs._worker(tmp_path, data_dir, THREE_POINTS, *flags) for _ in range(2)]
    _wait_for(lambda: _completed(study_trials(tmp_path, STUDY, database)), workers)
    finished_before = _completed(study_trials(tmp_path, STUDY, database))[0]
    postgres.restart(down_s=3)
    outputs = run_to_end(workers, PROCESS_TIMEOUT_S, with_stderr=True)

    trials = study_trials(tmp_path, STUDY, database)
    by_state = test_lacs._points_by_state(trials)
    assert by_state[TrialState.COMPLETE] == [(a, 1.0, 1.0) for a in (1.0, 1.2, 1.4)]  # each point trained once
    assert by_state[TrialState.FAIL] == []  # no worker gave up its point during the restart
    assert trials[finished_before.number] == finished_before  # the point finished before it is kept as it was
    assert len({t.user_attrs["worker"] for t in _completed(trials)}) == 2  # both workers trained
    evaluated = [int(stdout.split("this worker evaluated ")[1].split()[0]) for stdout, _ in outputs]
    assert sum(evaluated) == 3 and min(evaluated) >= 1
    # The workers noticed the restart, waited, and carried on.
    stderr = "".join(stderr for _, stderr in outputs)
    assert "; retrying for up to 120 s" in stderr
    assert "is back after" in stderr


def _trains(trial, process: subprocess.Popen) -> bool:
    """Whether `trial` runs in `process`, past its first heartbeat (the worker has finished choosing it)."""
    owner = trial.user_attrs.get("worker", "")
    return (
        trial.state == TrialState.RUNNING
        and lifecycle.HEARTBEAT_KEY in trial.user_attrs
        and owner.endswith(f":{process.pid}")
    )


@pytest.mark.slow
def test_two_search_workers_share_a_database_and_one_retries_the_others_killed_candidate(data_dir, tmp_path, database):
    # A stale_after_s well above the longest heartbeat gap of a busy 2-core machine (a worker loading
    # TensorFlow holds the GIL for seconds): a live worker's candidate must not be taken over.
    flags = [f"--storage={database}", "--poll_s=0.5", "--heartbeat_s=0.5", "--stale_after_s=20"]
    victim, survivor = (test_search._worker(tmp_path, data_dir, 2, *flags) for _ in range(2))
    try:  # killed as soon as it trains: the survivor's own candidate trains while the victim's goes stale
        _wait_for(lambda: any(_trains(t, victim) for t in study_trials(tmp_path, STUDY, database)), [victim])
    finally:
        victim.kill()
        victim.communicate()
    (killed,) = [t for t in study_trials(tmp_path, STUDY, database) if _trains(t, victim)]
    (stdout,) = run_to_end([survivor], PROCESS_TIMEOUT_S)

    assert "this worker trained 2 candidate(s)" in stdout  # its own and the victim's
    trials = study_trials(tmp_path, STUDY, database)
    assert trials[killed.number].state == TrialState.FAIL  # interrupted: failed without an error
    assert lifecycle.ERROR_KEY not in trials[killed.number].user_attrs
    (retry,) = [t for t in trials if t.number > killed.number and t.params == killed.params]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["worker"].endswith(f":{survivor.pid}")
    completed = _completed(trials)
    assert len(completed) == 2  # the budget, finished
    trained = [t for t in completed if worker.CACHED_KEY not in t.user_attrs]
    assert len({t.user_attrs[worker.CANONICAL_KEY] for t in trained}) == len(trained)  # none trained twice


def test_a_database_out_of_reach_stops_the_worker_after_stale_after_s_with_the_reason(tmp_path):
    port = free_port()  # nothing listens there
    url = f"postgresql://postgres:secret@127.0.0.1:{port}/sweeps"
    with pytest.raises(StorageUnreachable) as raised:
        run_lacs(test_lacs._experiment(), str(tmp_path), storage=url, timing=Timing(stale_after_s=1))
    # An OSError: the command line prints it as this one `error: ...` line.
    assert isinstance(raised.value, OSError)
    assert cli.one_line(raised.value) == (
        f"the study's database postgresql://postgres:***@127.0.0.1:{port}/sweeps stayed out of reach for 1 s "
        f'(connection failed: connection to server at "127.0.0.1", port {port} failed: Connection refused); '
        "what the workers finished is stored there: once it is back, rerun the same command to resume"
    )


@pytest.mark.slow
def test_storage_calls_in_flight_while_the_server_restarts_are_retried_on_a_fresh_session(postgres, database):
    # A query on a connection the restart dropped leaves its session in a failed transaction: the next
    # call on it fails with PendingRollbackError (raised while handling the OperationalError) unless the
    # storage drops that session before retrying.
    import threading

    import optuna

    from effnetx_jax.studies.storage import open_storage

    study = optuna.create_study(storage=open_storage(database, "unused", reconnect_s=60), study_name="in_flight")
    stop, errors = threading.Event(), []

    def ask_and_tell():
        while not stop.is_set():
            try:
                study.get_trials(deepcopy=False)
                study.tell(study.ask(), 1.0)
            except Exception as error:  # what the worker loop would have died of
                errors.append(error)
                return

    threads = [threading.Thread(target=ask_and_tell) for _ in range(2)]
    for thread in threads:
        thread.start()
    for _ in range(3):
        time.sleep(1.0)
        postgres.restart(down_s=1.0)
    time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(trial.state == TrialState.COMPLETE for trial in study.get_trials(deepcopy=False))
