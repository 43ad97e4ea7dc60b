"""`effnetx-convert tf|timm SOURCE --model=NAME --out=DIR` (or `python -m effnetx_jax.cli.convert`): published
weights to a checkpoint that `effnetx_jax.load`, eval, predict and export read.

  effnetx-convert tf CKPT_PREFIX --model=efficientnet-b0 --out=weights/efficientnet-b0
  effnetx-convert timm tf_efficientnet_b0.safetensors --model=efficientnet-b0 --out=DIR
  effnetx-convert tf advprop/efficientnet-b3/model.ckpt --model=efficientnet-b3 --advprop --out=DIR
"""

from absl import flags

from effnetx_jax import cli
from effnetx_jax.errors import UserError

_MODEL = flags.DEFINE_string("model", None, "Registered variant the weights belong to, e.g. efficientnet-b0.")
_CONFIG = flags.DEFINE_string(
    "config", None, "Instead of --model: a trainer config file (path.py or path.py:arg) of any architecture."
)
_OUT = flags.DEFINE_string("out", None, "Directory to write the converted checkpoint to (must not hold one).")
_ADVPROP = flags.DEFINE_bool(
    "advprop", False, "The weights are AdvProp's: images scaled to [-1, 1] instead of ImageNet mean/std."
)
flags.mark_flags_as_mutual_exclusive(["model", "config"], required=True)
flags.mark_flag_as_required("out")


def _main(argv: list[str]) -> None:
    if len(argv) != 3:
        raise UserError("give the kind and the source: effnetx-convert tf|timm SOURCE --model=NAME --out=DIR")
    _, kind, source = argv
    from effnetx_jax import config_files, weights
    from effnetx_jax.weights import convert

    model = config_files.load_config(_CONFIG.value) if _CONFIG.value else _MODEL.value
    config, variables, report = convert.convert(kind, source, model, advprop=_ADVPROP.value)
    weights.save_converted(_OUT.value, config, variables, report)
    print(
        f"{report['model']}: {report['tensors_loaded']} tensors from {source} "
        f"({report['ema_shadows_used']} of them EMA shadows), {len(report['dropped'])} dropped "
        f"(optimizer slots, counters, raw weights behind EMA shadows); {report['num_classes']} classes, "
        f"normalization {report['normalization']}.\nWrote {_OUT.value}: config.json, variables/, conversion.json",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    """The `effnetx-convert` console script."""
    cli.run(_main, argv, config_flags=())


if __name__ == "__main__":
    main()
