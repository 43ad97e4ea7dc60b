"""Trains a model: `python train.py --config=configs/quickstart.py --workdir=runs/quick`."""

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file (path.py or path.py:arg).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and logs; a rerun resumes.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # Imported here: Grain's worker processes re-import this module and must not pay for JAX.
    from effnetx_jax.train import format_metrics, train_and_evaluate

    metrics = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    print(format_metrics(metrics), flush=True)


if __name__ == "__main__":
    app.run(main)
