"""Converts published weights to a checkpoint that `effnetx_jax.load`, eval.py, predict and export read.

python -m effnetx_jax.convert tf CKPT_PREFIX --model=efficientnet-b0 --out=weights/efficientnet-b0
python -m effnetx_jax.convert timm tf_efficientnet_b0.safetensors --model=efficientnet-b0 --out=DIR
python -m effnetx_jax.convert tf advprop/efficientnet-b3/model.ckpt --model=efficientnet-b3 --advprop --out=DIR
"""

from absl import app, flags

from effnetx_jax import cli
from effnetx_jax.predict import define_flag


def define_flags() -> None:
    """The flags of `python -m effnetx_jax.convert` (also defined by a test that runs `main`)."""
    if define_flag(
        flags.DEFINE_string, "model", None, "Registered variant the weights belong to, e.g. efficientnet-b0."
    ):
        define_flag(
            flags.DEFINE_string,
            "config",
            None,
            "Instead of --model: a trainer config file (path.py or path.py:arg) of any architecture.",
        )
        flags.mark_flags_as_mutual_exclusive(["model", "config"], required=True)
    if define_flag(
        flags.DEFINE_string, "out", None, "Directory to write the converted checkpoint to (must not hold one)."
    ):
        flags.mark_flags_as_required(["out"])
    define_flag(
        flags.DEFINE_bool,
        "advprop",
        False,
        "The weights are AdvProp's: images scaled to [-1, 1] instead of ImageNet mean/std.",
    )


def main(argv):
    if len(argv) != 3:
        raise app.UsageError("usage: python -m effnetx_jax.convert tf|timm SOURCE --model=NAME --out=DIR")
    _, kind, source = argv
    from effnetx_jax import config_files, convert, weights

    values = flags.FLAGS
    model = config_files.load_config(values.config) if values.config else values.model
    config, variables, report = convert.convert(kind, source, model, advprop=values.advprop)
    weights.save_converted(values.out, config, variables, report)
    print(
        f"{report['model']}: {report['tensors_loaded']} tensors from {source} "
        f"({report['ema_shadows_used']} of them EMA shadows), {len(report['dropped'])} dropped "
        f"(optimizer slots, counters, raw weights behind EMA shadows); {report['num_classes']} classes, "
        f"normalization {report['normalization']}.\nWrote {values.out}: config.json, variables/, conversion.json",
        flush=True,
    )


if __name__ == "__main__":
    define_flags()
    cli.run(main)
