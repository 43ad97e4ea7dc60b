"""Command-line flags shared by the tools whose workers share an Optuna study (LACS, search).

Only absl is imported here: Grain's worker processes re-import the entry point and must not pay for JAX.
"""

from absl import flags

STORAGE = flags.DEFINE_string(
    "storage",
    None,
    "Database URL shared by workers on several machines (postgresql://user:password@host:5432/dbname, needs "
    "pip install -e '.[postgres]'; mysql://); default: a journal file in the workdir. A database that goes "
    "away is retried for up to --stale_after_s.",
)
_HEARTBEAT_S = flags.DEFINE_float("heartbeat_s", 10.0, "Seconds between a running trial's heartbeats.")
_STALE_AFTER_S = flags.DEFINE_float(
    "stale_after_s", 120.0, "Heartbeat silence after which a trial's worker counts as dead and the trial is retried."
)
_POLL_S = flags.DEFINE_float("poll_s", 10.0, "Seconds between checks while waiting for trials running elsewhere.")


def timing():
    """The flags' `studies.Timing`."""
    from effnetx_jax.studies import Timing

    return Timing(_HEARTBEAT_S.value, _STALE_AFTER_S.value, _POLL_S.value)
