"""Filling the Flax variables from another framework's tensors by name, with every shape checked.

A source (a TF checkpoint, a timm state dict) says, for each Flax variable, which of its tensors
holds the value and how that tensor's axes are laid out; `assemble` reads them, checks them and
reports what is missing, what did not fit and what was left over.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np

from effnetx_jax.errors import UserError
from effnetx_jax.weights.convert.layout import Layer


class ConversionError(UserError):
    """The source does not hold the weights of the requested model."""


@dataclasses.dataclass(frozen=True)
class SourceTensor:
    """A tensor of the source: its name, and the transpose that turns it into the Flax layout (None: as is)."""

    name: str
    axes: tuple[int, ...] | None = None

    def source_shape(self, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape this tensor must have in the source to fill a Flax variable of `flax_shape`."""
        if self.axes is None:
            return flax_shape
        shape = [0] * len(flax_shape)
        for flax_axis, source_axis in enumerate(self.axes):
            shape[source_axis] = flax_shape[flax_axis]
        return tuple(shape)


# A Flax variable: (collection, *module path, variable name), e.g. ("params", "blocks_0", "se", "reduce", "kernel").
FlaxKey = tuple[str, ...]


def flax_keys(layer: Layer) -> dict[str, FlaxKey]:
    """The layer's variables by name (`kernel`, `scale`, `mean`, ...) as full Flax keys."""
    return {name: (collection, *layer.path, name) for collection, name in layer.variables}


def _listing(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def assemble(
    layers: list[Layer],
    wanted: Mapping[FlaxKey, SourceTensor],
    source_shapes: Mapping[str, tuple[int, ...]],
    read: Callable[[str], np.ndarray],
    *,
    source: str,
    model: str,
    ignored: Callable[[str], bool] = lambda name: False,
) -> dict:
    """The Flax variables `{"params": ..., "batch_stats": ...}` read from the source.

    `wanted` maps every Flax variable of `layers` to a source tensor. Raises `ConversionError` naming
    the first tensor (in call order) whose shape does not fit, with both shapes, and listing the
    tensors that are missing and those of the source that nothing used (except `ignored` ones, such
    as optimizer slots).
    """
    mismatch, missing = None, []
    for layer in layers:
        for (collection, name), shape in layer.variables.items():
            tensor = wanted[(collection, *layer.path, name)]
            if tensor.name not in source_shapes:
                missing.append(tensor.name)
            elif mismatch is None and tuple(source_shapes[tensor.name]) != tensor.source_shape(shape):
                mismatch = (
                    f"{tensor.name} has shape {list(source_shapes[tensor.name])}, but {model} needs "
                    f"{list(tensor.source_shape(shape))} there (Flax {collection}/{'/'.join(layer.path)}/{name})"
                )
    used = {tensor.name for tensor in wanted.values()}
    unexpected = sorted(name for name in source_shapes if name not in used and not ignored(name))
    if mismatch or missing or unexpected:
        problems = [mismatch] if mismatch else []
        if missing:
            problems.append(f"{len(missing)} tensors {model} needs are missing: {_listing(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} tensors are not part of {model}: {_listing(unexpected)}")
        raise ConversionError(
            f"{source} does not hold the weights of {model} (a checkpoint of another architecture or variant?): "
            + "; ".join(problems)
        )
    variables: dict = {"params": {}, "batch_stats": {}}
    for (collection, *path, name), tensor in wanted.items():
        value = np.asarray(read(tensor.name), np.float32)
        node = variables[collection]
        for part in path:
            node = node.setdefault(part, {})
        node[name] = np.ascontiguousarray(value if tensor.axes is None else value.transpose(tensor.axes))
    return variables
