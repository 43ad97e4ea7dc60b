"""`python -m effnetx_jax.export --workdir=DIR --out=OUT --format=stablehlo|savedmodel`: a model to serve.

The exported function takes float32 images [N, R, R, 3] with pixel values in 0..255, already cropped
and resized to the model's resolution R as evaluation does (centre crop of
`config.data.eval_crop_fraction`, `config.data.resize`; see `effnetx_jax.predict.eval_pixels`),
normalises them with the config's mean/std and returns float32 logits [N, classes]. N is symbolic:
one artifact serves every batch size. The weights are inside the artifact.

- `stablehlo`: `OUT/model.jax_export`, a serialised `jax.export.Exported`;
  `jax.export.deserialize(bytes).call(images)` runs it in JAX.
- `savedmodel`: a TF SavedModel in OUT (jax2tf) whose `serving_default` signature maps `images` to
  `logits`, for TF Serving, TFLite converters and the like.

Both write `OUT/signature.json`: input and output shapes, normalisation, resolution, class names.
`--platforms` lists where the artifact may run (default: CPU, CUDA GPUs and TPUs); a model whose
depthwise convolutions are "auto" runs on each the implementation `auto` picks there.
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from effnetx_jax import cli, predict

EXPORT_FILE = "model.jax_export"
SIGNATURE_FILE = "signature.json"
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")
INPUT_NAME, OUTPUT_NAME = "images", "logits"


def export_stablehlo(
    directory: str, out: str, *, weights: str = "ema", step: int | None = None, platforms=DEFAULT_PLATFORMS
) -> list[str]:
    """Writes `out/model.jax_export` and `out/signature.json`; returns their paths."""
    import jax
    import numpy as np

    config, model, variables, source = _load(directory, weights, step)
    resolution = config.model.resolution
    logits = _portable_logits(model, config)
    images = jax.ShapeDtypeStruct(jax.export.symbolic_shape(f"batch, {resolution}, {resolution}, 3"), np.float32)
    # The variables are closed over, so they are constants of the exported module.
    exported = jax.export.export(jax.jit(lambda pixels: logits(variables, pixels)), platforms=tuple(platforms))(images)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, EXPORT_FILE)
    with open(path, "wb") as file:
        file.write(exported.serialize())
    signature = _write_signature(out, config, "stablehlo", platforms, source, file=EXPORT_FILE)
    return [path, signature]


def export_savedmodel(
    directory: str, out: str, *, weights: str = "ema", step: int | None = None, platforms=DEFAULT_PLATFORMS
) -> list[str]:
    """Writes a SavedModel (signature `serving_default`: `images` -> `logits`) and `signature.json` to `out`;
    returns the paths of the files written."""
    import jax
    import numpy as np
    import tensorflow as tf
    from jax.experimental import jax2tf

    config, model, variables, source = _load(directory, weights, step)
    resolution = config.model.resolution
    logits = _portable_logits(model, config)
    leaves, treedef = jax.tree.flatten(variables)

    def logits_of_leaves(leaves, pixels):
        return logits(jax.tree.unflatten(treedef, leaves), pixels)

    tf_logits = jax2tf.convert(
        logits_of_leaves,
        polymorphic_shapes=[None, f"(batch, {resolution}, {resolution}, 3)"],
        with_gradient=False,
        native_serialization_platforms=tuple(platforms),
    )
    module = tf.Module()
    # TF variables rather than graph constants: saved once in variables/, and no 2 GB GraphDef limit.
    module.parameters = [tf.Variable(np.asarray(leaf), trainable=False) for leaf in leaves]

    @tf.function(
        input_signature=[tf.TensorSpec([None, resolution, resolution, 3], tf.float32, name=INPUT_NAME)],
        autograph=False,
    )
    def serve(images):
        return {OUTPUT_NAME: tf_logits(list(module.parameters), images)}

    module.serve = serve
    tf.saved_model.save(module, out, signatures={"serving_default": serve})
    _write_signature(out, config, "savedmodel", platforms, source, signature="serving_default")
    return sorted(os.path.join(root, name) for root, _, names in os.walk(out) for name in names)


def _load(directory: str, weights: str, step: int | None):
    from effnetx_jax import weights as weights_lib

    config = weights_lib.read_config(directory)
    model, variables = weights_lib.load(directory, weights=weights, step=step)
    source = {"directory": os.path.abspath(directory), "weights": weights, "step": step}
    return config, model, variables, source


def _portable_logits(model, config):
    """`predict.pixel_logits`, with a depthwise implementation of "auto" resolved on the platform the
    artifact runs on (shifted slices on CPU, XLA's convolution elsewhere) rather than on this machine."""
    import jax

    if model.depthwise_impl != "auto":
        return predict.pixel_logits(model, config)
    on_cpu = predict.pixel_logits(model.clone(depthwise_impl="shifted"), config)
    elsewhere = predict.pixel_logits(model.clone(depthwise_impl="xla"), config)

    def logits(variables, pixels):
        return jax.lax.platform_dependent(variables, pixels, cpu=on_cpu, default=elsewhere)

    return logits


def _write_signature(out: str, config, export_format: str, platforms, source: dict, **artifact) -> str:
    """`out/signature.json`: what a server needs to feed the artifact and read its output."""
    resolution, num_classes = config.model.resolution, config.model.num_classes
    signature = {
        "model": config.model.name,
        "format": export_format,
        **artifact,
        "platforms": list(platforms),
        "inputs": {INPUT_NAME: {"shape": ["batch", resolution, resolution, 3], "dtype": "float32"}},
        "outputs": {OUTPUT_NAME: {"shape": ["batch", num_classes], "dtype": "float32"}},
        "resolution": resolution,
        "num_classes": num_classes,
        # The artifact normalises; the caller crops and resizes 0..255 pixels as evaluation does.
        "preprocessing": {
            "pixel_range": [0, 255],
            "eval_crop_fraction": float(config.data.eval_crop_fraction),
            "resize": config.data.resize,
            "mean": list(config.data.mean),
            "std": list(config.data.std),
            "normalised_inside": True,
        },
        "class_names": predict.class_names(config),
        "source": source,
    }
    path = os.path.join(out, SIGNATURE_FILE)
    with open(path, "w") as file:
        json.dump(signature, file, indent=2)
        file.write("\n")
    return path


EXPORTERS = {"stablehlo": export_stablehlo, "savedmodel": export_savedmodel}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    values = flags.FLAGS
    exporter = EXPORTERS[values.format]
    paths = exporter(values.workdir, values.out, weights=values.weights, step=values.step, platforms=values.platforms)
    total = sum(os.path.getsize(path) for path in paths)
    print(f"{values.format} export of {values.workdir} for {', '.join(values.platforms)}:")
    for path in paths:
        print(f"  {path}  {os.path.getsize(path):,} bytes")
    print(f"  total {total:,} bytes", flush=True)


if __name__ == "__main__":
    predict.define_weights_flags()
    flags.DEFINE_string("out", None, "Output directory (created if missing; files of an earlier export are replaced).")
    flags.DEFINE_enum("format", "stablehlo", list(EXPORTERS), "stablehlo (jax.export) or savedmodel (TF, via jax2tf).")
    flags.DEFINE_list("platforms", list(DEFAULT_PLATFORMS), "Platforms the artifact runs on: cpu, cuda, rocm, tpu.")
    flags.mark_flag_as_required("out")
    cli.run(main, config_flags=())
