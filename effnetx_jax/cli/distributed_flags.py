"""The flags of the tools that run on several processes (train, eval, LACS, search): how processes find each
other. Only absl is imported here (the entry-point rule in `effnetx_jax.cli`)."""

from absl import flags

_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0, for multi-process runs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes).")
_TIMEOUT = flags.DEFINE_integer("distributed_timeout_s", 300, "Seconds to wait for every process to join.")
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout_s", 100, "Seconds without a sign of life after which a process counts as dead."
)


def initialize_distributed() -> None:
    """`distributed.initialize` with the flags' values (each unset flag falls back to its environment variable)."""
    from effnetx_jax.train import distributed

    distributed.initialize(
        _COORDINATOR.value,
        _NUM_PROCESSES.value,
        _PROCESS_ID.value,
        timeout_s=_TIMEOUT.value,
        heartbeat_timeout_s=_HEARTBEAT.value,
    )
