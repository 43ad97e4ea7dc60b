"""Evaluates a checkpoint of a train.py run or converted weights: `python eval.py --workdir=DIR`.

Without `--config`, the config is the one stored with the weights (`DIR/config.json`, read as data,
with `--data_dir` and `--eval_split` to point it at this machine's dataset); `--config=configs/b0.py`
(with `--config.KEY=...` overrides) evaluates them under a config file instead.

The latest checkpoint by default (`--step=N` for another), with the EMA weights (`--weights=raw` for the
trained ones), over the whole `config.eval_split` (`--config.eval_split=...` for another split). Prints
top-1, top-5, loss and the number of examples; writes nothing and never changes the checkpoints.

Multi-host: run the same command on every host, with the same distributed flags as train.py.
"""

from absl import app, flags
from ml_collections import config_flags

from effnetx_jax import cli, cli_flags
from effnetx_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A config file (path.py or path.py:arg); default: the config stored in --workdir.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "The --workdir that train.py wrote the checkpoints in.")
_STEP = flags.DEFINE_integer("step", None, "The step of the checkpoint to evaluate; default: the latest.")
_WEIGHTS = flags.DEFINE_string("weights", "ema", "ema: the moving average of the weights; raw: the trained weights.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Without --config: the TFDS data dir, instead of the stored one.")
_EVAL_SPLIT = flags.DEFINE_string("eval_split", None, "Without --config: the split, instead of the stored one.")
flags.mark_flags_as_required(["workdir"])


def _weights_label(step) -> str:
    return "converted weights" if step is None else f"step {step} ({_WEIGHTS.value} weights)"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # Heavy imports inside main: the entry-point rule in effnetx_jax/cli.py.
    from effnetx_jax import weights
    from effnetx_jax.train import evaluate_checkpoint

    cli_flags.initialize_distributed()
    config = cli.config_value(_CONFIG)
    if config is None:
        config = weights.read_config(_WORKDIR.value)
        for key, flag in (("data_dir", _DATA_DIR), ("eval_split", _EVAL_SPLIT)):
            if flag.value is not None:
                config[key] = flag.value
    elif _DATA_DIR.value is not None or _EVAL_SPLIT.value is not None:
        raise UserError("--data_dir and --eval_split apply to the stored config; with --config: --config.KEY")
    result = evaluate_checkpoint(config, _WORKDIR.value, step=_STEP.value, weights=_WEIGHTS.value)
    print(
        f"{_weights_label(result['step'])} on {config.dataset} {config.eval_split}: "
        f"top1={result['top1']:.4f} top5={result['top5']:.4f} loss={result['loss']:.4f} "
        f"examples={result['num_examples']} skipped_images={result['skipped_images']}",
        flush=True,
    )


if __name__ == "__main__":
    cli.run(main)
