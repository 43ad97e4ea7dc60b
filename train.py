"""Trains a model: `python train.py --config=configs/quickstart.py --workdir=runs/quick`.

Multi-host: run the same command on every host. TPU pods, SLURM and Open MPI need nothing more;
elsewhere add `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` (or set
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID).
"""

from absl import app, flags
from ml_collections import config_flags

from effnetx_jax import cli, cli_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file (path.py or path.py:arg).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and logs; a rerun resumes.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # Heavy imports inside main: the entry-point rule in effnetx_jax/cli.py.
    from effnetx_jax.train import format_metrics, train_and_evaluate

    cli_flags.initialize_distributed()
    metrics = train_and_evaluate(cli.config_value(_CONFIG), _WORKDIR.value)
    print(format_metrics(metrics), flush=True)


if __name__ == "__main__":
    cli.run(main)
