"""`effnetx-search --config=experiments/search/NAME.py --workdir=DIR [--storage=URL]` (or
`python -m effnetx_jax.cli.search`): an architecture search (see `effnetx_jax.studies.search`), shared by
workers as every study is (`effnetx_jax.cli.study_flags`).
"""

from absl import flags

from effnetx_jax import cli
from effnetx_jax.cli import study_flags

_COMMAND = study_flags.define(
    "search", workdir_help="Search directory: study journal, proxy runs, history.csv, pareto.png, best.py, report.md."
)
flags.adopt_module_key_flags(study_flags)  # --help lists the flags every study tool has


def _main(argv: list[str]) -> None:
    from effnetx_jax.studies.search.run import run_search

    run_search(**_COMMAND.start(argv))


def main(argv: list[str] | None = None) -> None:
    """The `effnetx-search` console script."""
    cli.run(_main, argv)


if __name__ == "__main__":
    main()
