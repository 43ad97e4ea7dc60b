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
import math
import os
import reprlib
import struct
from typing import NoReturn

import ml_dtypes
import numpy as np

from effnetx_jax.errors import UserError
from effnetx_jax.models.scaling import Architecture
from effnetx_jax.weights.convert.layout import Layer
from effnetx_jax.weights.convert.matching import FlaxKey, SourceTensor, flax_keys

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
HEADER_LENGTH_BYTES = 8  # the u64 in front of the JSON header
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
    """Shapes and values of a .safetensors file, memory-mapped.

    The whole header is checked when the file is opened, so that a file that is not safetensors, or
    whose header does not fit its bytes, is refused naming the file and the first thing wrong (a
    `UserError`; an `OSError` where the file cannot be read at all) rather than failing on a read.
    """

    def __init__(self, path: str):
        self.path = path
        with open(path, "rb") as file:
            file_size = os.fstat(file.fileno()).st_size
            header_size, header = self._header(file, file_size)
        data_size = file_size - HEADER_LENGTH_BYTES - header_size
        header.pop("__metadata__", None)  # free-form strings, not a tensor
        for name, entry in header.items():
            self._check_entry(name, entry, data_size)
        # numpy cannot map zero bytes: a file of empty tensors only has nothing to map.
        self._data = (
            np.memmap(path, np.uint8, mode="r", offset=HEADER_LENGTH_BYTES + header_size)
            if data_size
            else np.zeros(0, np.uint8)
        )
        self._entries = header
        self.shapes = {name: tuple(entry["shape"]) for name, entry in header.items()}

    def _refuse(self, reason: str) -> NoReturn:
        raise UserError(f"{self.path} is not a valid safetensors file: {reason}")

    def _header(self, file, file_size: int) -> tuple[int, dict]:
        """The header's length and the header: a little-endian u64, then that many bytes of a JSON object."""
        length = file.read(HEADER_LENGTH_BYTES)
        if len(length) < HEADER_LENGTH_BYTES:
            self._refuse(f"it has {file_size} bytes, fewer than the {HEADER_LENGTH_BYTES} of the header length")
        (header_size,) = struct.unpack("<Q", length)
        if header_size > file_size - HEADER_LENGTH_BYTES:
            # Checked before reading: a random length (up to 2**64) must not become a huge allocation.
            self._refuse(
                f"its header length says {header_size:,} bytes, but only {file_size - HEADER_LENGTH_BYTES:,} follow it"
            )
        try:
            header = json.loads(file.read(header_size).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            self._refuse(f"its header is not JSON ({error})")
        if not isinstance(header, dict):
            self._refuse(f"its header is a JSON {type(header).__name__}, not an object of tensor entries")
        return header_size, header

    def _check_entry(self, name: str, entry, data_size: int) -> None:
        """An entry is {"dtype": str, "shape": [int, ...], "data_offsets": [begin, end]} inside the data,
        with as many bytes as its shape and dtype need."""
        if not (isinstance(entry, dict) and {"dtype", "shape", "data_offsets"} <= entry.keys()):
            self._refuse(f"the entry of tensor {name!r} is {reprlib.repr(entry)}, not {{dtype, shape, data_offsets}}")
        shape, offsets, dtype = entry["shape"], entry["data_offsets"], entry["dtype"]
        if not (isinstance(shape, list) and all(_is_count(side) for side in shape)):
            self._refuse(f"tensor {name!r} has shape {reprlib.repr(shape)}, not a list of non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))):
            self._refuse(f"tensor {name!r} has data_offsets {reprlib.repr(offsets)}, not [begin, end]")
        begin, end = offsets
        if not begin <= end <= data_size:
            self._refuse(
                f"tensor {name!r} has data_offsets [{begin}, {end}], outside the {data_size:,} bytes of data "
                "after the header"
            )
        if not isinstance(dtype, str):
            self._refuse(f"tensor {name!r} has dtype {reprlib.repr(dtype)}, not a name such as 'F32'")
        if dtype in _DTYPES and end - begin != math.prod(shape) * np.dtype(_DTYPES[dtype]).itemsize:
            self._refuse(f"tensor {name!r} of shape {shape} and dtype {dtype} has {end - begin} bytes of data")

    def read(self, name: str) -> np.ndarray:
        entry = self._entries[name]
        if entry["dtype"] not in _DTYPES:  # checked on read: a tensor nobody reads may be of any type
            raise UserError(
                f"{self.path}: tensor {name!r} has dtype {entry['dtype']!r}; this reader knows {', '.join(_DTYPES)}"
            )
        begin, end = entry["data_offsets"]
        dtype = np.dtype(_DTYPES[entry["dtype"]]).newbyteorder("<")
        return self._data[begin:end].view(dtype).reshape(entry["shape"])


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
