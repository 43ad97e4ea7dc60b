"""`effnetx-train --config=configs/quickstart.py --workdir=runs/quick` (or `python train.py`,
`python -m effnetx_jax.cli.train`): trains a model; a rerun on the same workdir resumes.

Multi-host: run the same command on every host. TPU pods, SLURM and Open MPI need nothing more;
elsewhere add `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` (or set
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID).
"""

from absl import flags
from ml_collections import config_flags

from effnetx_jax import cli
from effnetx_jax.cli import distributed_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file (path.py or path.py:arg).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and logs; a rerun resumes.")
flags.mark_flags_as_required(["config", "workdir"])
flags.adopt_module_key_flags(distributed_flags)


def _main(argv: list[str]) -> None:
    cli.refuse_arguments(argv)
    from effnetx_jax.train import format_metrics, train_and_evaluate

    distributed_flags.initialize_distributed()
    metrics = train_and_evaluate(cli.config_value(_CONFIG), _WORKDIR.value)
    print(format_metrics(metrics), flush=True)


def main(argv: list[str] | None = None) -> None:
    """The `effnetx-train` console script (and train.py)."""
    cli.run(_main, argv)


if __name__ == "__main__":
    main()
