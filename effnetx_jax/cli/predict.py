"""`effnetx-predict --workdir=DIR IMAGE [IMAGE ...]` (or `python -m effnetx_jax.cli.predict`): the most
probable classes of image files.

DIR holds weights: a converted checkpoint (`effnetx-convert`) or a train.py workdir (`--weights=raw` for
the trained weights instead of their moving average, `--step=N` for an older checkpoint). Each image goes
through the evaluation preprocessing of DIR's config (`effnetx_jax.weights.predict` says how, and where
the class names come from).
"""

from absl import flags

from effnetx_jax import cli
from effnetx_jax.cli import weights_flags
from effnetx_jax.errors import UserError

_TOP_K = flags.DEFINE_integer("top_k", 5, "Classes to show per image, most probable first.", lower_bound=1)
flags.adopt_module_key_flags(weights_flags)


def _main(argv: list[str]) -> None:
    from effnetx_jax.weights.predict import format_prediction, predict

    if len(argv) < 2:
        raise UserError("give one or more image files: effnetx-predict --workdir=DIR IMAGE [IMAGE ...]")
    predictions = predict(
        weights_flags.WORKDIR.value,
        argv[1:],
        top_k=_TOP_K.value,
        weights=weights_flags.WEIGHTS.value,
        step=weights_flags.STEP.value,
    )
    print("\n".join(format_prediction(prediction) for prediction in predictions), flush=True)


def main(argv: list[str] | None = None) -> None:
    """The `effnetx-predict` console script."""
    cli.run(_main, argv, config_flags=())


if __name__ == "__main__":
    main()
