"""`python -m effnetx_jax.lacs --config=experiments/lacs/NAME.py --workdir=DIR [--storage=URL]`.

Run the same command in several processes (or on several machines with `--storage`) to share one
sweep; rerun it to resume. Multi-host slices: the same command on every host, as train.py.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from effnetx_jax import cli, cli_flags, study_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "LACS experiment config (experiments/lacs/NAME.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep directory: study journal, proxy runs, report, family configs.")
_CREATE_ONLY = flags.DEFINE_bool("create_only", False, "Create the study, measure the base latency, and exit.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # Imported here: Grain's worker processes re-import this module and must not pay for JAX.
    from effnetx_jax.lacs.run import run_lacs

    cli_flags.initialize_distributed()
    run_lacs(
        cli.config_value(_CONFIG),
        _WORKDIR.value,
        storage=study_flags.STORAGE.value,
        timing=study_flags.timing(),
        create_only=_CREATE_ONLY.value,
        command="python -m effnetx_jax.lacs " + " ".join(sys.argv[1:]),
    )


if __name__ == "__main__":
    cli.run(main)
