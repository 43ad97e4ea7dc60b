"""`python -m effnetx_jax.lacs --config=experiments/lacs/NAME.py --workdir=DIR [--storage=URL] [--create_only]`.

A LACS sweep (see `effnetx_jax.lacs`), shared by workers as every study is (`effnetx_jax.studies.command_line`).
"""

from absl import flags

from effnetx_jax import cli
from effnetx_jax.studies import command_line

_COMMAND = command_line.define(
    "effnetx_jax.lacs", workdir_help="Sweep directory: study journal, proxy runs, report, family configs."
)
_CREATE_ONLY = flags.DEFINE_bool("create_only", False, "Create the study, measure the base latency, and exit.")
flags.adopt_module_key_flags(command_line)  # --help lists the flags every study tool has


def main(argv):
    from effnetx_jax.lacs.run import run_lacs

    run_lacs(**_COMMAND.start(argv), create_only=_CREATE_ONLY.value)


if __name__ == "__main__":
    cli.run(main)
