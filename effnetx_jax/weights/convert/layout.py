"""The Flax model's layers in the order the forward pass calls them, with their variables' shapes.

TF names a block's layers by call order (`conv2d`, `conv2d_1`, ...), so the order is taken from the
Flax model itself (by intercepting its calls during an abstract `init`) rather than restated here.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from effnetx_jax.models import create_model

# Where each kind of variable lives in the Flax tree: BatchNorm's statistics are not parameters.
COLLECTIONS = ("params", "batch_stats")


@dataclasses.dataclass(frozen=True)
class Layer:
    """One Flax module that owns variables: its path (`("blocks_3", "se", "reduce")`) and its
    variables as `{(collection, name): shape}`."""

    path: tuple[str, ...]
    variables: dict[tuple[str, str], tuple[int, ...]]

    @property
    def kind(self) -> str:
        """ "batch_norm", "depthwise", "dense" or "conv" (any other kernel)."""
        if ("batch_stats", "mean") in self.variables:
            return "batch_norm"
        if self.path[-1] == "depthwise":
            return "depthwise"
        return "dense" if len(self.variables["params", "kernel"]) == 2 else "conv"


def model_layers(model_cfg) -> list[Layer]:
    """The layers of the model built from `model_cfg`, in call order; nothing is computed."""
    model = create_model(model_cfg)
    called: list[tuple[str, ...]] = []

    def record(call, args, kwargs, context):
        if context.method_name == "__call__" and context.module.path not in called:
            called.append(context.module.path)
        return call(*args, **kwargs)

    image = jnp.zeros((1, model_cfg.resolution, model_cfg.resolution, 3), jnp.float32)
    with nn.intercept_methods(record):
        shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), image))
    layers = []
    for path in called:
        owned = {}
        for collection in COLLECTIONS:
            node = shapes[collection]
            for name in path:
                node = node.get(name, {})
            owned.update({(collection, key): tuple(leaf.shape) for key, leaf in node.items() if hasattr(leaf, "shape")})
        if owned:
            layers.append(Layer(path, owned))
    return layers
