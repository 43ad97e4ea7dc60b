"""`python -m effnetx_jax.search --config=experiments/search/NAME.py --workdir=DIR [--storage=URL]`.

Run the same command in several processes (or on several machines with `--storage`) to share one
search; rerun it to resume. Multi-host slices: the same command on every host, as train.py.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from effnetx_jax import cli, cli_flags, study_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Search experiment config (experiments/search/NAME.py).")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Search directory: study journal, proxy runs, history.csv, pareto.png, best.py, report.md."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # Imported here: Grain's worker processes re-import this module and must not pay for JAX.
    from effnetx_jax.search.run import run_search

    cli_flags.initialize_distributed()
    run_search(
        cli.config_value(_CONFIG),
        _WORKDIR.value,
        storage=study_flags.STORAGE.value,
        timing=study_flags.timing(),
        command="python -m effnetx_jax.search " + " ".join(sys.argv[1:]),
    )


if __name__ == "__main__":
    cli.run(main)
