"""timm `tf_efficientnet_b*` weights (safetensors) -> Flax variables.

timm's TF ports keep the reference's architecture (TF "SAME" padding, BatchNorm epsilon 1e-3) under
PyTorch names and layouts: stem `conv_stem`/`bn1`; stage s, block j at `blocks.s.j`, a depthwise-
separable block (expansion 1: `conv_dw`, `bn1`, `se`, `conv_pw`, `bn2`) or an inverted residual
(`conv_pw`, `bn1`, `conv_dw`, `bn2`, `se`, `conv_pwl`, `bn3`); head `conv_head`, `bn2`,
`classifier`. Convolutions are [out, in, kh, kw], depthwise [C, 1, kh, kw], linear layers [out, in].
The file is read with numpy alone (the safetensors format: a JSON header, then raw little-endian arrays).
"""

from __future__ import annotations

import json
import struct

import ml_dtypes
import numpy as np

from effnetx_jax.convert.layout import Layer
from effnetx_jax.convert.matching import FlaxKey, SourceTensor, flax_keys
from effnetx_jax.errors import UserError
from effnetx_jax.models.scaling import Architecture

_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
# BatchNorm's update counter: not part of the model.
DROPPED_SUFFIXES = (".num_batches_tracked",)

_BATCH_NORM = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
# Flax layout from PyTorch's: [out, in, kh, kw] -> [kh, kw, in, out] (depthwise [C, 1, kh, kw] -> [kh, kw, 1, C]).
_CONV_AXES = (2, 3, 1, 0)
_LINEAR_AXES = (1, 0)
# Per block type, timm's module name for each of our layers.
_DEPTHWISE_SEPARABLE = {"depthwise": "conv_dw", "depthwise_bn": "bn1", "project_conv": "conv_pw", "project_bn": "bn2"}
_INVERTED_RESIDUAL = {
    "expand_conv": "conv_pw",
    "expand_bn": "bn1",
    "depthwise": "conv_dw",
    "depthwise_bn": "bn2",
    "project_conv": "conv_pwl",
    "project_bn": "bn3",
}
_TOP_LEVEL = {"stem_conv": "conv_stem", "stem_bn": "bn1", "head_conv": "conv_head", "head_bn": "bn2"}


def is_dropped(name: str) -> bool:
    return name.endswith(DROPPED_SUFFIXES)


def _block_prefixes(arch: Architecture) -> dict[str, tuple[str, dict[str, str]]]:
    """`blocks_N` -> (`blocks.<stage>.<j>`, its layer names); refuses blocks timm's EfficientNet has not."""
    prefixes, position_in_stage = {}, {}
    for spec in arch.blocks:
        if spec.block_type != "mbconv" or spec.space_to_depth_conv or spec.space_to_batch:
            raise UserError(
                f"{arch.name} block {spec.index} is a {spec.block_type} block"
                f"{' with space-to-depth' if spec.space_to_depth_conv else ''}"
                f"{' with space-to-batch' if spec.space_to_batch else ''}: timm's tf_efficientnet_b* weights hold "
                "depthwise MBConv blocks only (EfficientNet-B0..B7); EfficientNet-X has no timm port"
            )
        j = position_in_stage[spec.stage] = position_in_stage.get(spec.stage, -1) + 1
        names = _DEPTHWISE_SEPARABLE if spec.expand_ratio == 1 else _INVERTED_RESIDUAL
        prefixes[f"blocks_{spec.index}"] = (f"blocks.{spec.stage}.{j}", names)
    return prefixes


def _module_name(path: tuple[str, ...], blocks) -> str:
    if path == ("classifier",):
        return "classifier"
    if len(path) == 1:
        return _TOP_LEVEL[path[0]]
    prefix, names = blocks[path[0]]
    if path[1] == "se":  # se/reduce, se/expand
        return f"{prefix}.se.conv_{path[2]}"
    return f"{prefix}.{names[path[1]]}"


def wanted_tensors(layers: list[Layer], arch: Architecture) -> dict[FlaxKey, SourceTensor]:
    blocks = _block_prefixes(arch)
    wanted = {}
    for layer in layers:
        module = _module_name(layer.path, blocks)
        for variable, key in flax_keys(layer).items():
            if layer.kind == "batch_norm":
                wanted[key] = SourceTensor(f"{module}.{_BATCH_NORM[variable]}")
            elif variable == "bias":
                wanted[key] = SourceTensor(f"{module}.bias")
            else:
                wanted[key] = SourceTensor(f"{module}.weight", _LINEAR_AXES if layer.kind == "dense" else _CONV_AXES)
    return wanted


def num_classes(shapes) -> int | None:
    shape = shapes.get("classifier.weight")
    return None if shape is None else int(shape[0])


class SafetensorsReader:
    """Shapes and values of a .safetensors file, memory-mapped."""

    def __init__(self, path: str):
        try:
            with open(path, "rb") as file:
                (header_size,) = struct.unpack("<Q", file.read(8))
                header = json.loads(file.read(header_size))
        except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as error:
            raise FileNotFoundError(f"cannot read {path!r} as a safetensors file: {error}") from None
        header.pop("__metadata__", None)
        self._data = np.memmap(path, np.uint8, mode="r", offset=8 + header_size)
        self._entries = header
        self.shapes = {name: tuple(entry["shape"]) for name, entry in header.items()}

    def read(self, name: str) -> np.ndarray:
        entry = self._entries[name]
        begin, end = entry["data_offsets"]
        dtype = np.dtype(_DTYPES[entry["dtype"]]).newbyteorder("<")
        return self._data[begin:end].view(dtype).reshape(entry["shape"])
