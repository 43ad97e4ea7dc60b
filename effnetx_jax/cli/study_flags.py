"""The command line of a study tool (`effnetx-lacs`, `effnetx-search`): the flags every one has, defined once
by `define`, and read by `StudyCommand.start`.

Run the same command in several processes (or on several machines with `--storage`) to share one study;
rerun it to resume. Multi-host slices: the same command on every host, as train.py.

Only absl, ml_collections and light modules are imported here, since the entry points import this module
at their top (the entry-point rule in `effnetx_jax.cli`); their tool is imported inside `main`.
"""

from __future__ import annotations

import dataclasses
import sys

from absl import flags
from ml_collections import config_flags

from effnetx_jax import cli
from effnetx_jax.cli import distributed_flags
from effnetx_jax.studies import Timing

_STORAGE = flags.DEFINE_string(
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
flags.adopt_module_key_flags(distributed_flags)


@dataclasses.dataclass(frozen=True)
class StudyCommand:
    """The `--config` and `--workdir` flags of the tool `effnetx-<tool>`, beside the shared ones above."""

    tool: str
    config: flags.FlagHolder
    workdir: flags.FlagHolder

    def start(self, argv: list[str]) -> dict:
        """Refuses stray arguments, joins the other processes of a multi-process run, and returns the tool's
        arguments: `config`, `workdir`, `storage`, `timing` and `command` (this command line, for the report)."""
        cli.refuse_arguments(argv)
        distributed_flags.initialize_distributed()
        return {
            "config": cli.config_value(self.config),
            "workdir": self.workdir.value,
            "storage": _STORAGE.value,
            "timing": Timing(_HEARTBEAT_S.value, _STALE_AFTER_S.value, _POLL_S.value),
            "command": f"effnetx-{self.tool} " + " ".join(sys.argv[1:]),
        }


def define(tool: str, workdir_help: str) -> StudyCommand:
    """Defines the required `--config` (an experiment config file, experiments/<tool>/NAME.py) and `--workdir`
    of the tool `effnetx-<tool>` (e.g. lacs)."""
    config = config_flags.DEFINE_config_file("config", None, f"Experiment config (experiments/{tool}/NAME.py).")
    workdir = flags.DEFINE_string("workdir", None, workdir_help)
    flags.mark_flags_as_required(["config", "workdir"])
    return StudyCommand(tool, config, workdir)
