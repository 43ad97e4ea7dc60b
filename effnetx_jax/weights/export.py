"""A model to serve, from a weights directory (`effnetx-export --workdir=DIR --out=OUT --format=...`).

The exported function takes float32 images [N, R, R, 3] with pixel values in 0..255, already cropped
and resized to the model's resolution R as evaluation does (centre crop of
`config.data.eval_crop_fraction`, `config.data.resize`; see `effnetx_jax.weights.predict.eval_pixels`),
normalises them with the config's mean/std and returns float32 logits [N, classes]. N is symbolic:
one artifact serves every batch size. The weights are inside the artifact.

- `stablehlo`: `OUT/model.jax_export`, a serialised `jax.export.Exported`;
  `jax.export.deserialize(bytes).call(images)` runs it in JAX.
- `savedmodel`: a TF SavedModel in OUT (jax2tf) whose `serving_default` signature maps `images` to
  `logits`, for TF Serving, TFLite converters and the like.
- `onnx`: `OUT/model.onnx` (opset 17, NCHW inside, BatchNorm folded into the convs) for ONNX Runtime;
  needs the optional extra `effnetx_jax[onnx]` (`effnetx_jax.weights.onnx`).

All write `OUT/signature.json`: input and output shapes, normalisation, resolution, class names,
and `files`, the files the export wrote. An OUT that already holds an export is refused unless
`overwrite`; with it, the earlier export's files (those its signature.json lists, whatever their
format) are removed before the new ones are written, and nothing else in OUT is touched. Files in OUT
that no export listed are never replaced: an export that would write over one is refused. These
checks run before the weights are read.
`platforms` lists where the artifact may run (default: CPU, CUDA GPUs and TPUs); a model whose
depthwise convolutions are "auto" runs on each the implementation `auto` picks there.
"""

from __future__ import annotations

import json
import os

from effnetx_jax.errors import UserError
from effnetx_jax.weights import predict

EXPORT_FILE = "model.jax_export"
ONNX_FILE = "model.onnx"
SIGNATURE_FILE = "signature.json"
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")
INPUT_NAME, OUTPUT_NAME = "images", "logits"
# The names each format writes directly in OUT (tf.saved_model.save: the graph, its fingerprint, the
# variables/ and assets/ folders), besides signature.json.
TOP_LEVEL_NAMES = {
    "stablehlo": (EXPORT_FILE,),
    "savedmodel": ("saved_model.pb", "fingerprint.pb", "variables", "assets"),
    "onnx": (ONNX_FILE,),
}


def export_stablehlo(
    directory: str,
    out: str,
    *,
    weights: str = "ema",
    step: int | None = None,
    platforms=DEFAULT_PLATFORMS,
    overwrite: bool = False,
) -> list[str]:
    """Writes `out/model.jax_export` and `out/signature.json`; returns their paths. An `out` holding an
    export is refused unless `overwrite` (see the module docstring)."""
    import jax
    import numpy as np

    earlier = files_to_replace(out, "stablehlo", overwrite)
    config, model, variables, source = _load(directory, weights, step)
    resolution = config.model.resolution
    logits = _portable_logits(model, config)
    images = jax.ShapeDtypeStruct(jax.export.symbolic_shape(f"batch, {resolution}, {resolution}, 3"), np.float32)
    # The variables are closed over, so they are constants of the exported module.
    exported = jax.export.export(jax.jit(lambda pixels: logits(variables, pixels)), platforms=tuple(platforms))(images)
    remove_export(out, earlier)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, EXPORT_FILE)
    with open(path, "wb") as file:
        file.write(exported.serialize())
    signature = _write_signature(out, config, "stablehlo", platforms, source, [EXPORT_FILE], file=EXPORT_FILE)
    return [path, signature]


def export_savedmodel(
    directory: str,
    out: str,
    *,
    weights: str = "ema",
    step: int | None = None,
    platforms=DEFAULT_PLATFORMS,
    overwrite: bool = False,
) -> list[str]:
    """Writes a SavedModel (signature `serving_default`: `images` -> `logits`) and `signature.json` to `out`;
    returns the paths of the files written. An `out` holding an export is refused unless `overwrite`."""
    earlier = files_to_replace(out, "savedmodel", overwrite)
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
    remove_export(out, earlier)
    before = _entries_in(out)
    tf.saved_model.save(module, out, signatures={"serving_default": serve})
    written = sorted(_entries_in(out) - before)  # the files and folders the SavedModel writer made
    signature = _write_signature(out, config, "savedmodel", platforms, source, written, signature="serving_default")
    return [*(os.path.join(out, name) for name in written if not name.endswith("/")), signature]


# ------------------------------------------------------------------------------------------------
# An earlier export in OUT: refused, or replaced without touching anything else
# ------------------------------------------------------------------------------------------------


def files_to_replace(out: str, export_format: str, overwrite: bool) -> list[str]:
    """The files and folders ('name/') of the export already in `out` (relative paths, its signature.json
    last) that a new
    `export_format` export replaces; [] if none. Raises `UserError` (before anything is read or compiled)
    when `out` holds an export and not `overwrite`, or a file the new export would write over that no
    export listed: such a file may be the user's, and is never replaced."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise NotADirectoryError(f"--out={out} is a file, not a directory")
    manifest = os.path.join(out, SIGNATURE_FILE)
    earlier = [*_listed_files(out, manifest), SIGNATURE_FILE] if os.path.exists(manifest) else []
    if earlier and not overwrite:
        raise UserError(
            f"{out} already holds an export ({SIGNATURE_FILE}); pass --overwrite (overwrite=True) to replace it, "
            "or choose another --out"
        )
    ours = {name.split("/")[0] for name in earlier}
    for name in TOP_LEVEL_NAMES[export_format]:
        if os.path.exists(os.path.join(out, name)) and name not in ours:
            raise UserError(
                f"{out} holds {name}, which the {export_format} export would write over, but no export of "
                f"effnetx_jax lists it as its own{' in ' + SIGNATURE_FILE if earlier else ''}; "
                "remove it yourself or choose another --out"
            )
    return earlier


def _listed_files(out: str, manifest: str) -> list[str]:
    """The files the export whose signature.json is `manifest` wrote, refused where they leave `out`."""
    try:
        with open(manifest) as file:
            listed = json.load(file).get("files", [])
    except (ValueError, AttributeError) as error:
        raise UserError(f"{manifest} is not the signature.json of an export: {error}") from None
    if not (isinstance(listed, list) and all(isinstance(name, str) for name in listed)):
        raise UserError(f"{manifest}: 'files' is not a list of paths")
    for name in listed:
        parts = name.removesuffix("/").split("/")
        if os.path.isabs(name) or any(part in ("", ".", "..") for part in parts):
            raise UserError(f"{manifest} lists {name!r}, which is not a path inside {out}; nothing was removed")
    return listed


def remove_export(out: str, entries: list[str]) -> None:
    """Deletes `entries` (paths relative to `out`: files, and folders as 'name/' that go only once empty),
    deepest first; nothing else."""
    for name in sorted(entries, key=lambda name: name.count("/") - name.endswith("/"), reverse=True):
        path = os.path.join(out, name)
        if name.endswith("/"):
            if os.path.isdir(path) and not os.listdir(path):
                os.rmdir(path)
        elif os.path.isfile(path) or os.path.islink(path):
            os.remove(path)


def _entries_in(out: str) -> set[str]:
    """Every file under `out`, and every folder as 'name/', as '/'-separated paths relative to it."""
    entries = set()
    for root, folders, files in os.walk(out):
        relative = os.path.relpath(root, out).replace(os.sep, "/")
        prefix = "" if relative == "." else relative + "/"
        entries.update(prefix + name + "/" for name in folders)
        entries.update(prefix + name for name in files)
    return entries


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


def _write_signature(out: str, config, export_format: str, platforms, source: dict, files, **artifact) -> str:
    """`out/signature.json`: what a server needs to feed the artifact and read its output, and the files
    the export wrote (what a later `--overwrite` removes)."""
    resolution, num_classes = config.model.resolution, config.model.num_classes
    signature = {
        "model": config.model.name,
        "format": export_format,
        **artifact,
        # Where the artifact may run; an ONNX file runs wherever ONNX Runtime does (None: not written).
        **({"platforms": list(platforms)} if platforms is not None else {}),
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
        "files": list(files),
    }
    path = os.path.join(out, SIGNATURE_FILE)
    with open(path, "w") as file:
        json.dump(signature, file, indent=2)
        file.write("\n")
    return path


def export_onnx(directory: str, out: str, *, weights: str = "ema", step: int | None = None, overwrite: bool = False):
    """`effnetx_jax.weights.onnx.export_onnx`: `out/model.onnx` for ONNX Runtime (imported here on use, as it
    needs the optional onnx package)."""
    from effnetx_jax.weights import onnx

    return onnx.export_onnx(directory, out, weights=weights, step=step, overwrite=overwrite)


EXPORTERS = {"stablehlo": export_stablehlo, "savedmodel": export_savedmodel, "onnx": export_onnx}
