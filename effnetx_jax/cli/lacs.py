"""`effnetx-lacs --config=experiments/lacs/NAME.py --workdir=DIR [--storage=URL] [--create_only]` (or
`python -m effnetx_jax.cli.lacs`): a LACS sweep (see `effnetx_jax.studies.lacs`), shared by workers as every
study is (`effnetx_jax.cli.study_flags`).
"""

from absl import flags

from effnetx_jax import cli
from effnetx_jax.cli import study_flags

_COMMAND = study_flags.define(
    "lacs", workdir_help="Sweep directory: study journal, proxy runs, report, family configs."
)
_CREATE_ONLY = flags.DEFINE_bool("create_only", False, "Create the study, measure the base latency, and exit.")
flags.adopt_module_key_flags(study_flags)  # --help lists the flags every study tool has


def _main(argv: list[str]) -> None:
    from effnetx_jax.studies.lacs.run import run_lacs

    run_lacs(**_COMMAND.start(argv), create_only=_CREATE_ONLY.value)


def main(argv: list[str] | None = None) -> None:
    """The `effnetx-lacs` console script."""
    cli.run(_main, argv)


if __name__ == "__main__":
    main()
