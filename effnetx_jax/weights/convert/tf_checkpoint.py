"""Official TF1 EfficientNet checkpoints (tensorflow/tpu `main.py`) -> Flax variables (reference §7).

Names: `<model>/<scope>/<layer>/<variable>`. Scopes are `stem`, `blocks_N`, `blocks_N/space2depth`,
`blocks_N/se` and `head`; inside a scope TF numbers layers of one kind by call order (`conv2d`,
`conv2d_1`, ...; `tpu_batch_normalization`, `tpu_batch_normalization_1`, ...), so which name a
block's projection gets depends on whether it has an expansion conv. A checkpoint written during
training also holds the moving averages `<name>/ExponentialMovingAverage` (what the reference
evaluates; preferred here), optimizer slots and `global_step` (dropped).
"""

from __future__ import annotations

import collections

import numpy as np

from effnetx_jax.errors import UserError
from effnetx_jax.weights.convert.layout import Layer
from effnetx_jax.weights.convert.matching import FlaxKey, SourceTensor, flax_keys

EMA_SUFFIX = "/ExponentialMovingAverage"
# Training-only variables: optimizer slots (RMSProp, momentum) and the step counter.
DROPPED_SUFFIXES = ("/RMSProp", "/RMSProp_1", "/Momentum", "/Adam", "/Adam_1")
DROPPED_NAMES = ("global_step", "beta1_power", "beta2_power")

# TF layer names by kind, and the variable names inside each.
_TF_LAYER = {
    "batch_norm": "tpu_batch_normalization",
    "depthwise": "depthwise_conv2d",
    "dense": "dense",
    "conv": "conv2d",
}
_TF_VARIABLE = {
    "batch_norm": {"scale": "gamma", "bias": "beta", "mean": "moving_mean", "var": "moving_variance"},
    "depthwise": {"kernel": "depthwise_kernel"},
    "dense": {"kernel": "kernel", "bias": "bias"},
    "conv": {"kernel": "kernel", "bias": "bias"},
}
# TF's depthwise kernel is [kh, kw, C, 1]; Flax's grouped-conv layout is [kh, kw, 1, C].
_SWAP_LAST_AXES = (0, 1, 3, 2)


def is_dropped(name: str) -> bool:
    """Optimizer slots and counters: in training checkpoints, not part of the model."""
    return name.split("/")[-1] in DROPPED_NAMES or name.endswith(DROPPED_SUFFIXES)


def _tf_scope(path: tuple[str, ...]) -> str:
    *parents, name = path
    if not parents:  # stem_conv, stem_bn -> stem; head_conv, head_bn, classifier -> head
        return "head" if name == "classifier" else name.split("_")[0]
    if name.startswith("space2depth_"):
        return "/".join([*parents, "space2depth"])
    return "/".join(parents)


def tf_names(layers: list[Layer], scope: str) -> dict[FlaxKey, str]:
    """The TF variable name (without EMA suffix) of every Flax variable, for a model built under `scope`."""
    calls_per_scope: collections.Counter = collections.Counter()
    names = {}
    for layer in layers:
        tf_scope, kind = _tf_scope(layer.path), layer.kind
        count = calls_per_scope[tf_scope, kind]
        calls_per_scope[tf_scope, kind] += 1
        tf_layer = _TF_LAYER[kind] + (f"_{count}" if count else "")
        for variable, key in flax_keys(layer).items():
            names[key] = f"{scope}/{tf_scope}/{tf_layer}/{_TF_VARIABLE[kind][variable]}"
    return names


def wanted_tensors(layers: list[Layer], scope: str, available) -> dict[FlaxKey, SourceTensor]:
    """Every Flax variable's source tensor: the EMA shadow where `available` has it, else the variable."""
    wanted = {}
    for key, name in tf_names(layers, scope).items():
        if name + EMA_SUFFIX in available:
            name += EMA_SUFFIX
        wanted[key] = SourceTensor(name, _SWAP_LAST_AXES if key[-2] == "depthwise" else None)
    return wanted


def model_scope(shapes) -> str:
    """The top-level scope of the checkpoint's model variables (the model name it was built with)."""
    scopes = sorted({name.split("/")[0] for name in shapes if not is_dropped(name) and "/" in name})
    if len(scopes) != 1:
        raise UserError(f"expected the variables of one model under one scope, found scopes {scopes}")
    return scopes[0]


def num_classes(shapes, scope: str) -> int | None:
    """The number of classes of the checkpoint's classifier, if it has one where the reference puts it."""
    shape = shapes.get(f"{scope}/head/dense/kernel")
    return None if shape is None else int(shape[-1])


class CheckpointReader:
    """A TF checkpoint's variable shapes and values (through TensorFlow's reader, no graph needed)."""

    def __init__(self, prefix: str):
        import tensorflow as tf

        try:
            self._reader = tf.train.load_checkpoint(prefix)
        except (ValueError, tf.errors.OpError) as error:
            raise FileNotFoundError(
                f"cannot read a TF checkpoint at {prefix!r} (give the prefix, e.g. DIR/model.ckpt, "
                f"for DIR/model.ckpt.index and .data-*): {error}"
            ) from None
        self.shapes = {name: tuple(shape) for name, shape in self._reader.get_variable_to_shape_map().items()}

    def read(self, name: str) -> np.ndarray:
        return self._reader.get_tensor(name)
