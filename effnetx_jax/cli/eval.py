"""`effnetx-eval --workdir=DIR` (or `python eval.py`, `python -m effnetx_jax.cli.eval`): evaluates a checkpoint
of a train.py run, or converted weights.

Without `--config`, the config is the one stored with the weights (`DIR/config.json`, read as data,
with `--data_dir` and `--eval_split` to point it at this machine's dataset); `--config=configs/b0.py`
(with `--config.KEY=...` overrides) evaluates them under a config file instead.

The latest checkpoint by default (`--step=N` for another), with the EMA weights (`--weights=raw` for the
trained ones), over the whole `config.eval_split` (`--config.eval_split=...` for another split). Prints
top-1, top-5, loss and the number of examples; writes nothing and never changes the checkpoints.

Multi-host: run the same command on every host, with the same distributed flags as train.py.
"""

from absl import flags
from ml_collections import config_flags

from effnetx_jax import cli
from effnetx_jax.cli import distributed_flags, weights_flags
from effnetx_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A config file (path.py or path.py:arg); default: the config stored in --workdir.", lock_config=True
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Without --config: the TFDS data dir, instead of the stored one.")
_EVAL_SPLIT = flags.DEFINE_string("eval_split", None, "Without --config: the split, instead of the stored one.")
flags.adopt_module_key_flags(weights_flags)
flags.adopt_module_key_flags(distributed_flags)


def _weights_label(step) -> str:
    return "converted weights" if step is None else f"step {step} ({weights_flags.WEIGHTS.value} weights)"


def _main(argv: list[str]) -> None:
    cli.refuse_arguments(argv)
    from effnetx_jax import weights
    from effnetx_jax.train import evaluate_checkpoint

    distributed_flags.initialize_distributed()
    config = cli.config_value(_CONFIG)
    if config is None:
        config = weights.read_config(weights_flags.WORKDIR.value)
        for key, flag in (("data_dir", _DATA_DIR), ("eval_split", _EVAL_SPLIT)):
            if flag.value is not None:
                config[key] = flag.value
    elif _DATA_DIR.value is not None or _EVAL_SPLIT.value is not None:
        raise UserError("--data_dir and --eval_split apply to the stored config; with --config: --config.KEY")
    result = evaluate_checkpoint(
        config, weights_flags.WORKDIR.value, step=weights_flags.STEP.value, weights=weights_flags.WEIGHTS.value
    )
    print(
        f"{_weights_label(result['step'])} on {config.dataset} {config.eval_split}: "
        f"top1={result['top1']:.4f} top5={result['top5']:.4f} loss={result['loss']:.4f} "
        f"examples={result['num_examples']} skipped_images={result['skipped_images']}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    """The `effnetx-eval` console script (and eval.py)."""
    cli.run(_main, argv)


if __name__ == "__main__":
    main()
