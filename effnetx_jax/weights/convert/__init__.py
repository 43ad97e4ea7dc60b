"""Pretrained weights from other frameworks -> converted checkpoints that `effnetx_jax.load` reads.

  effnetx-convert tf CKPT_PREFIX --model=efficientnet-b0 --out=DIR
  effnetx-convert timm FILE.safetensors --model=efficientnet-b0 --out=DIR

`convert(kind, source, model)` returns the trainer config (the variant with the preprocessing its
weights expect), the Flax variables and a report; `effnetx_jax.weights.save_converted` writes them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import ml_collections

from effnetx_jax import recipe
from effnetx_jax.errors import UserError
from effnetx_jax.models import architecture
from effnetx_jax.weights.convert import tf_checkpoint, timm_weights
from effnetx_jax.weights.convert.layout import model_layers
from effnetx_jax.weights.convert.matching import ConversionError, assemble

SOURCES = ("tf", "timm")
# AdvProp checkpoints were trained on images scaled to [-1, 1] (x * 2/255 - 1) instead of mean/std.
ADVPROP_MEAN = ADVPROP_STD = (127.5, 127.5, 127.5)

__all__ = ["SOURCES", "ConversionError", "convert", "converted_config"]


def converted_config(model: str, num_classes: int | None, advprop: bool = False) -> ml_collections.ConfigDict:
    """The ImageNet trainer config of `model` with the preprocessing its published weights were evaluated
    with: float32, the variant's resolution, the paper-era centre crop R/(R+32), TF1's `resize_bicubic`
    (exactly, `bicubic_tf1`: the reference's default resize), ImageNet mean/std or AdvProp's [-1, 1]."""
    config = recipe.get_config(model)
    config.model.dtype = "float32"
    config.data.resize = "bicubic_tf1"
    if num_classes is not None:
        config.model.num_classes = num_classes
    if advprop:
        config.data.mean, config.data.std = ADVPROP_MEAN, ADVPROP_STD
    return config


@dataclasses.dataclass(frozen=True)
class _Source:
    """What differs between the formats: the reader, the classifier's class count, the names each Flax
    variable is read from, and which of the file's tensors are training state rather than model."""

    reader: tf_checkpoint.CheckpointReader | timm_weights.SafetensorsReader
    description: str
    num_classes: int | None
    wanted: Callable[[list, ml_collections.ConfigDict], dict]
    dropped: Callable[[str], bool]


def _open(kind: str, source: str) -> _Source:
    if kind == "tf":
        reader = tf_checkpoint.CheckpointReader(source)
        scope = tf_checkpoint.model_scope(reader.shapes)
        return _Source(
            reader,
            f"the TF checkpoint {source} (scope {scope!r})",
            tf_checkpoint.num_classes(reader.shapes, scope),
            lambda layers, _: tf_checkpoint.wanted_tensors(layers, scope, reader.shapes),
            tf_checkpoint.is_dropped,
        )
    if kind == "timm":
        reader = timm_weights.SafetensorsReader(source)
        return _Source(
            reader,
            f"the timm weights {source}",
            timm_weights.num_classes(reader.shapes),
            lambda layers, model_cfg: timm_weights.wanted_tensors(layers, architecture(model_cfg)),
            timm_weights.is_dropped,
        )
    raise UserError(f"unknown source kind {kind!r}; expected one of {', '.join(SOURCES)}")


def convert(kind: str, source: str, model: str | ml_collections.ConfigDict, *, advprop: bool = False):
    """Reads `source` (a TF checkpoint prefix or a timm .safetensors file) as the weights of `model`: a
    registered variant's name, or a trainer config (any architecture, e.g. a custom or LACS-scaled one).
    Returns `(config, variables, report)`; raises `ConversionError` if the weights do not fit the model."""
    opened = _open(kind, source)
    config = converted_config(model, opened.num_classes, advprop) if isinstance(model, str) else model
    layers = model_layers(config.model)
    wanted = opened.wanted(layers, config.model)
    used = {tensor.name for tensor in wanted.values()}

    def ignored(name: str) -> bool:
        # Optimizer slots and counters, and the raw variables whose EMA shadows were taken.
        return opened.dropped(name) or name + tf_checkpoint.EMA_SUFFIX in used

    name = config.model.name
    variables = assemble(
        layers, wanted, opened.reader.shapes, opened.reader.read, source=opened.description, model=name, ignored=ignored
    )
    report = {
        "source": os.path.abspath(source),
        "format": kind,
        "model": name,
        "num_classes": config.model.num_classes,
        "normalization": "mean {}, std {}".format(
            *([round(float(v), 4) for v in config.data[key]] for key in ("mean", "std"))
        ),
        "tensors_loaded": len(wanted),
        "ema_shadows_used": sum(tensor.name.endswith(tf_checkpoint.EMA_SUFFIX) for tensor in wanted.values()),
        "dropped": sorted(name for name in opened.reader.shapes if ignored(name)),
    }
    return config, variables, report
