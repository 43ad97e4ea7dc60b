"""`python -m effnetx_jax.search --config=experiments/search/NAME.py --workdir=DIR [--storage=URL]`.

An architecture search (see `effnetx_jax.search`); its workers share it as they share every study
(`effnetx_jax.studies.command_line`).
"""

from absl import flags

from effnetx_jax import cli
from effnetx_jax.studies import command_line

_COMMAND = command_line.define(
    "effnetx_jax.search",
    workdir_help="Search directory: study journal, proxy runs, history.csv, pareto.png, best.py, report.md.",
)
flags.adopt_module_key_flags(command_line)  # --help lists the flags every study tool has


def main(argv):
    from effnetx_jax.search.run import run_search

    run_search(**_COMMAND.start(argv))


if __name__ == "__main__":
    cli.run(main)
