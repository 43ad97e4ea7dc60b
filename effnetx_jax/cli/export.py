"""`effnetx-export --workdir=DIR --out=OUT --format=stablehlo|savedmodel|onnx` (or `python -m effnetx_jax.cli.export`):
a model to serve, with its weights inside (`effnetx_jax.weights.export` describes the formats).
"""

import os

from absl import flags

from effnetx_jax import cli
from effnetx_jax.cli import weights_flags
from effnetx_jax.errors import UserError

_OUT = flags.DEFINE_string(
    "out",
    None,
    "Output directory (created if missing). One that holds an export is refused unless --overwrite; "
    "files of other origin in it are never replaced.",
)
# The formats and platforms of `effnetx_jax.weights.export`, written out so that --help imports no JAX
# (tests/test_predict_export.py keeps them equal).
_FORMAT = flags.DEFINE_enum(
    "format",
    "stablehlo",
    ["stablehlo", "savedmodel", "onnx"],
    "stablehlo (jax.export), savedmodel (TF, via jax2tf) or onnx (for ONNX Runtime; pip install 'effnetx_jax[onnx]').",
)
_PLATFORMS = flags.DEFINE_list(
    "platforms",
    ["cpu", "cuda", "tpu"],
    "Platforms the artifact runs on: cpu, cuda, rocm, tpu (stablehlo and savedmodel; not onnx).",
)
_OVERWRITE = flags.DEFINE_bool(
    "overwrite",
    False,
    "Replace the export already in --out: the files its signature.json lists (of any format) are removed "
    "first; nothing else in --out is touched.",
)
flags.mark_flag_as_required("out")
flags.adopt_module_key_flags(weights_flags)


def _main(argv: list[str]) -> None:
    from effnetx_jax.weights.export import EXPORTERS

    cli.refuse_arguments(argv)
    options = {"platforms": _PLATFORMS.value}
    if _FORMAT.value == "onnx":
        # The file names no platform: it runs wherever ONNX Runtime does, on the execution provider its session picks.
        if flags.FLAGS["platforms"].present:
            raise UserError(
                "--platforms is for stablehlo and savedmodel; an onnx export runs wherever ONNX Runtime does"
            )
        options = {}
    paths = EXPORTERS[_FORMAT.value](
        weights_flags.WORKDIR.value,
        _OUT.value,
        weights=weights_flags.WEIGHTS.value,
        step=weights_flags.STEP.value,
        overwrite=_OVERWRITE.value,
        **options,
    )
    total = sum(os.path.getsize(path) for path in paths)
    where = f" for {', '.join(options['platforms'])}" if options else ""
    print(f"{_FORMAT.value} export of {weights_flags.WORKDIR.value}{where}:")
    for path in paths:
        print(f"  {path}  {os.path.getsize(path):,} bytes")
    print(f"  total {total:,} bytes", flush=True)


def main(argv: list[str] | None = None) -> None:
    """The `effnetx-export` console script."""
    cli.run(_main, argv, config_flags=())


if __name__ == "__main__":
    main()
