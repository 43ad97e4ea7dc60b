"""Starting multi-process JAX: automatic where JAX detects the cluster, from explicit settings elsewhere.

`initialize` is called once per process before anything touches a device:
- explicit: a coordinator address, the number of processes and this process's id (flags, or the
  environment variables `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`);
- automatic: on TPU pods, under SLURM and under Open MPI, JAX reads all three from the environment;
- otherwise a single process, which needs nothing.
"""

from __future__ import annotations

import os
import socket
import time

import jax
from absl import logging

from effnetx_jax.errors import UserError

ENVIRONMENT_VARIABLES = {
    "coordinator_address": "JAX_COORDINATOR_ADDRESS",
    "num_processes": "JAX_NUM_PROCESSES",
    "process_id": "JAX_PROCESS_ID",
}


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout_s: int = 300,
    heartbeat_timeout_s: int = 100,
) -> None:
    """Joins this process to the others; each setting left as None is read from its environment variable.

    `timeout_s` bounds the start-up: a process that cannot reach the coordinator in that time fails
    with an error naming the address. After start-up, a process that stops answering for
    `heartbeat_timeout_s` (killed, its host lost) makes the others stop with JAX's error that a task
    died, instead of waiting forever in a collective.
    """
    explicit = _explicit_settings(coordinator_address, num_processes, process_id)
    if explicit:
        address, count, index = explicit
        if count == 1:
            return
        if index != 0:
            _wait_for_coordinator(address, index, count, timeout_s)
        logging.info("jax.distributed: process %d of %d, coordinator %s", index, count, address)
        jax.distributed.initialize(
            address, count, index, initialization_timeout=timeout_s, heartbeat_timeout_seconds=heartbeat_timeout_s
        )
    elif cluster := detected_cluster():
        logging.info("jax.distributed: settings from the %s environment", cluster)
        jax.distributed.initialize(initialization_timeout=timeout_s, heartbeat_timeout_seconds=heartbeat_timeout_s)
    else:
        return
    # The processes exchange their device lists when the backend starts: do it now, within the
    # start-up timeout, rather than at the first device use after data preparation.
    logging.info("jax.distributed: %d processes, %d devices in all", jax.process_count(), jax.device_count())


def _explicit_settings(coordinator_address, num_processes, process_id) -> tuple[str, int, int] | None:
    given = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
    for key, variable in ENVIRONMENT_VARIABLES.items():
        if given[key] is None and os.environ.get(variable):
            given[key] = os.environ[variable]
    if all(value is None for value in given.values()):
        return None
    missing = [f"--{key} (or {ENVIRONMENT_VARIABLES[key]})" for key, value in given.items() if value is None]
    if missing:
        raise UserError(f"distributed start-up: {', '.join(missing)} missing; give all three settings or none")
    try:
        count, index = int(given["num_processes"]), int(given["process_id"])
    except ValueError as error:
        raise UserError(f"distributed start-up: num_processes and process_id must be integers ({error})") from None
    if count < 1 or not 0 <= index < count:
        raise UserError(f"distributed start-up: process_id {index} is not in [0, num_processes={count})")
    return str(given["coordinator_address"]), count, index


def detected_cluster() -> str | None:
    """The cluster environment `jax.distributed.initialize()` would configure itself from, if any.

    JAX has no public API for the question, so this asks the same registry of cluster types
    (TPU pods, SLURM, Open MPI, Kubernetes) that its auto-detection walks, skipping the opt-in ones.
    """
    from jax._src import clusters

    for cluster in clusters.ClusterEnv._cluster_types:
        if not cluster.opt_in_only_method and cluster.is_env_present():
            return cluster.__name__
    return None


def _wait_for_coordinator(address: str, index: int, count: int, timeout_s: int) -> None:
    """Retries a TCP connection to the coordinator until `timeout_s`, then fails naming the address.

    JAX would abort the process from C++ with a bare DEADLINE_EXCEEDED instead.
    """
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"distributed start-up: coordinator address {address!r} is not HOST:PORT")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=min(5.0, timeout_s)):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise ConnectionError(
                    f"distributed start-up: process {index} of {count} could not reach the coordinator at "
                    f"{address} within {timeout_s} s ({error}). Process 0 runs the coordinator: start it "
                    "with the same --coordinator_address, and check the host name and that the port is open."
                ) from None
            time.sleep(0.5)
