"""Evaluates a checkpoint of a train.py run: `python eval.py --config=configs/b0.py --workdir=runs/b0`,
or converted weights: `python eval.py --config=DIR/config.py --workdir=DIR` (see effnetx_jax.convert).

The latest checkpoint by default (`--step=N` for another), with the EMA weights (`--weights=raw` for the
trained ones), over the whole `config.eval_split` (`--config.eval_split=...` for another split). Prints
top-1, top-5, loss and the number of examples; writes nothing and never changes the checkpoints.

Multi-host: run the same command on every host, with the same distributed flags as train.py.
"""

from absl import app, flags
from ml_collections import config_flags

from effnetx_jax import cli_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "The training config file of the run (path.py or path.py:arg).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "The --workdir that train.py wrote the checkpoints in.")
_STEP = flags.DEFINE_integer("step", None, "The step of the checkpoint to evaluate; default: the latest.")
_WEIGHTS = flags.DEFINE_string("weights", "ema", "ema: the moving average of the weights; raw: the trained weights.")
flags.mark_flags_as_required(["config", "workdir"])


def _weights_label(step) -> str:
    return "converted weights" if step is None else f"step {step} ({_WEIGHTS.value} weights)"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # Imported here: Grain's worker processes re-import this module and must not pay for JAX.
    from effnetx_jax.train import evaluate_checkpoint

    cli_flags.initialize_distributed()
    config = _CONFIG.value
    result = evaluate_checkpoint(config, _WORKDIR.value, step=_STEP.value, weights=_WEIGHTS.value)
    print(
        f"{_weights_label(result['step'])} on {config.dataset} {config.eval_split}: "
        f"top1={result['top1']:.4f} top5={result['top5']:.4f} loss={result['loss']:.4f} "
        f"examples={result['num_examples']} skipped_images={result['skipped_images']}",
        flush=True,
    )


if __name__ == "__main__":
    app.run(main)
