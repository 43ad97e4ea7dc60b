"""An ONNX file of a model (`effnetx-export --format=onnx`), built from its architecture and variables.

The graph takes what the other formats take (float32 images [N, R, R, 3], pixels 0..255, cropped and
resized as evaluation does; N symbolic) and returns float32 logits [N, classes]. It is laid out as
ONNX Runtime runs fastest, in the layout of PyTorch's exports: one Transpose to NCHW, then the
normalisation with the config's mean/std (its division folded into the stem conv); every conv
(depthwise ones as grouped convs) with its BatchNorm folded into its weights and bias; TF "SAME"
padding as explicit pads per layer (the odd pixel at the bottom and right), computed from the model's
fixed resolution. A graph converted op by op from JAX (jax2onnx) ran at 0.4x the speed of timm's
export: NHWC transposes around each conv, pad ops and unfolded BatchNorm.

The layers are those the Flax model builds: the stem and head of `EfficientNet`, and every block's
layers as its block type describes them (`block_parts.Block.describe`), so each kind of layer (conv,
SE, the space-to-batch wrap, the residual) is written once, whatever the block type. Drop-path and
dropout are identity at inference.
"""

from __future__ import annotations

import os

import numpy as np

from effnetx_jax.errors import UserError
from effnetx_jax.models import costs, layers, shapes
from effnetx_jax.models.block_parts import ConvLayer, SqueezeExciteLayer
from effnetx_jax.models.blocks import BLOCK_TYPES
from effnetx_jax.weights import export

# What PyTorch's exporter writes for timm by default, and what every ONNX Runtime since 1.12 runs.
OPSET = 17
IR_VERSION = 8  # the IR version of opset 17
# A protobuf message, so an ONNX file without external data, holds at most 2 GiB.
MAX_FILE_BYTES = 2**31
BATCH = "batch"
NCHW = (0, 3, 1, 2)


def _onnx():
    try:
        import onnx
    except ImportError:
        raise UserError("the onnx export needs the onnx package: pip install 'effnetx_jax[onnx]'") from None
    return onnx


def export_onnx(directory: str, out: str, *, weights: str = "ema", step: int | None = None, overwrite: bool = False):
    """Writes `out/model.onnx` and `out/signature.json`; returns their paths. An `out` holding an export is
    refused unless `overwrite` (see `effnetx_jax.weights.export`)."""
    onnx = _onnx()
    earlier = export.files_to_replace(out, "onnx", overwrite)
    config, model, variables, source = export._load(directory, weights, step)
    proto = model_proto(model, variables, config)
    export.remove_export(out, earlier)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, export.ONNX_FILE)
    onnx.save_model(proto, path)
    signature = export._write_signature(
        out, config, "onnx", None, source, [export.ONNX_FILE], file=export.ONNX_FILE, opset=OPSET
    )
    return [path, signature]


def model_proto(model, variables, config):
    """The `onnx.ModelProto` of `model` (an `EfficientNet`) with `variables`, normalising with `config.data`."""
    onnx = _onnx()
    arch = model.arch
    weight_bytes = 4 * costs.parameter_count(arch)
    if weight_bytes > MAX_FILE_BYTES:
        raise UserError(
            f"{arch.name}: {weight_bytes / 2**30:.1f} GiB of float32 weights, more than the 2 GiB one ONNX file holds"
        )
    variables = {collection: _as_numpy(tree) for collection, tree in variables.items()}
    graph = _Graph(onnx, variables, arch.bn_epsilon)
    # (x - mean) / std, with the division folded into the stem's weights: zero padding commutes with it, not
    # with the subtraction. A Sub and a Div on the NHWC input made the whole graph 5-10% slower than timm's,
    # which takes normalised NCHW images (benchmarks/onnx_vs_timm.py); without the Div it runs as fast.
    x = graph.node("Transpose", export.INPUT_NAME, perm=NCHW)
    mean, std = (np.asarray(config.data[key], np.float64).reshape(1, 3, 1, 1) for key in ("mean", "std"))
    x = graph.node("Sub", x, graph.constant("mean", mean))
    size = (arch.resolution, arch.resolution)
    stem = ConvLayer("stem", 3, 3, arch.stem_filters, (shapes.STEM_STRIDE,) * 2)
    x, size = graph.conv(x, size, stem, (), arch.activation, input_scale=1 / std.reshape(3))
    for spec in arch.blocks:
        x, size = _block(graph, x, size, spec)
    head = ConvLayer("head", 1, arch.blocks[-1].output_filters, arch.head_filters)
    x, size = graph.conv(x, size, head, (), arch.activation)
    x = graph.node("Flatten", graph.node("GlobalAveragePool", x))
    classifier = graph.params(("classifier",))
    # PyTorch's layout of a linear layer, [classes, features] with transB, as timm's export has it.
    weight, bias = (
        graph.constant("classifier/weight", classifier["kernel"].T),
        graph.constant("classifier/bias", classifier["bias"]),
    )
    graph.node("Gemm", x, weight, bias, transB=1, output=export.OUTPUT_NAME)
    helper = onnx.helper
    images = helper.make_tensor_value_info(
        export.INPUT_NAME, onnx.TensorProto.FLOAT, [BATCH, arch.resolution, arch.resolution, 3]
    )
    logits = helper.make_tensor_value_info(export.OUTPUT_NAME, onnx.TensorProto.FLOAT, [BATCH, arch.num_classes])
    body = helper.make_graph(graph.nodes, arch.name, [images], [logits], graph.initializers)
    return helper.make_model(
        body,
        producer_name="effnetx_jax",
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
    )


def _as_numpy(tree):
    return {key: _as_numpy(value) if isinstance(value, dict) else np.asarray(value) for key, value in tree.items()}


def _block(graph, x, size, spec):
    """One block: its described layers, inside the space-to-batch wrap, plus the residual (`block_parts.Block`)."""
    scope = (f"blocks_{spec.index}",)
    inputs, block = x, spec.space_to_batch
    if block:
        x, size = graph.space_to_batch(x, size, spec.input_channels, block), (size[0] // block, size[1] // block)
    gate = None
    for layer in BLOCK_TYPES[spec.block_type].describe(spec):
        if isinstance(layer, SqueezeExciteLayer):
            gate = graph.squeeze_excite(x, (*scope, layer.name), spec.activation)
            continue
        if gate is not None:  # SE's gate scales the input of the layer after it, the projection
            x, gate = graph.node("Mul", x, gate), None
        x, size = graph.conv(x, size, layer, scope, spec.activation)
    if block:
        x = graph.batch_to_space(x, size, spec.output_filters, block)
        size = (size[0] * block, size[1] * block)
    return (graph.node("Add", x, inputs) if spec.has_residual else x), size


class _Graph:
    """The nodes and initialisers of the graph being built, and the variables they are made from."""

    def __init__(self, onnx, variables, bn_epsilon: float):
        self._onnx, self._variables, self._epsilon = onnx, variables, bn_epsilon
        self.nodes, self.initializers = [], []
        self._count = 0

    def params(self, path, collection="params"):
        node = self._variables[collection]
        for name in path:
            node = node[name]
        return node

    def constant(self, name: str, value, dtype=np.float32) -> str:
        self.initializers.append(self._onnx.numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def node(self, op: str, *inputs: str, output: str | None = None, **attributes) -> str:
        self._count += 1
        output = output or f"{op.lower()}_{self._count}"
        self.nodes.append(self._onnx.helper.make_node(op, list(inputs), [output], **attributes))
        return output

    def activation(self, x: str, name: str) -> str:
        if name == "relu":
            return self.node("Relu", x)
        if name == "swish":  # x * sigmoid(x), as PyTorch exports SiLU: ONNX Runtime fuses the pair
            return self.node("Mul", x, self.node("Sigmoid", x))
        raise NotImplementedError(f"the ONNX export has no form for the activation {name!r}")

    def conv(self, x: str, size, layer: ConvLayer, scope: tuple[str, ...], activation: str, input_scale=1.0):
        """`layer` (conv, BatchNorm, activation unless it has none) on `x` of spatial `size`, times `input_scale`
        per input channel; returns the output and its size."""
        kernel = self.params((*scope, layer.conv_name))["kernel"].astype(np.float64)
        bn = self.params((*scope, layer.bn_name))
        stats = self.params((*scope, layer.bn_name), "batch_stats")
        # BatchNorm at inference is y * scale + shift per output channel: folded into the conv's weights and bias.
        scale = bn["scale"] / np.sqrt(stats["var"].astype(np.float64) + self._epsilon)
        shift = bn["bias"] - stats["mean"] * scale
        # Flax's [kh, kw, in / groups, out] (depthwise: [kh, kw, 1, C]) -> ONNX's [out, in / groups, kh, kw].
        weight = kernel.transpose(3, 2, 0, 1) * scale[:, None, None, None] * np.reshape(input_scale, (1, -1, 1, 1))
        name = "/".join((*scope, layer.name))
        pads = [
            layers.same_padding(side, layer.kernel, stride) for side, stride in zip(size, layer.strides, strict=True)
        ]
        y = self.node(
            "Conv",
            x,
            self.constant(f"{name}/weight", weight),
            self.constant(f"{name}/bias", shift),
            kernel_shape=[layer.kernel] * 2,
            strides=list(layer.strides),
            pads=[pads[0][0], pads[1][0], pads[0][1], pads[1][1]],  # begins (top, left), then ends
            group=layer.groups,
        )
        if layer.activation:
            y = self.activation(y, activation)
        return y, shapes.strided(size, layer.strides)

    def _conv_with_bias(self, x: str, path: tuple[str, ...]) -> str:
        """A 1x1 conv with its own bias and no BatchNorm (SE's)."""
        params = self.params(path)
        name = "/".join(path)
        weight = self.constant(f"{name}/weight", params["kernel"].transpose(3, 2, 0, 1))
        return self.node("Conv", x, weight, self.constant(f"{name}/bias", params["bias"]), kernel_shape=[1, 1])

    def squeeze_excite(self, x: str, path: tuple[str, ...], activation: str) -> str:
        """SE's [N, C, 1, 1] gate of `x` (`block_parts.SqueezeExcite`)."""
        squeezed = self.activation(
            self._conv_with_bias(self.node("GlobalAveragePool", x), (*path, "reduce")), activation
        )
        return self.node("Sigmoid", self._conv_with_bias(squeezed, (*path, "expand")))

    def _reshape(self, x: str, shape) -> str:
        """`x` reshaped to `shape`, whose first entry (-1) is the batch: the only size the graph leaves open."""
        return self.node("Reshape", x, self.constant(f"shape_{len(self.initializers)}", shape, np.int64))

    def space_to_batch(self, x: str, size, channels: int, block: int) -> str:
        """`layers.space_to_batch` in NCHW: batch index (n*b + i)*b + j holds pixels (h*b + i, w*b + j) of image n."""
        (h, w), b = size, block
        x = self._reshape(x, [-1, channels, h // b, b, w // b, b])  # [N, C, H/b, i, W/b, j]
        x = self.node("Transpose", x, perm=[0, 3, 5, 1, 2, 4])  # [N, i, j, C, H/b, W/b]
        return self._reshape(x, [-1, channels, h // b, w // b])

    def batch_to_space(self, x: str, size, channels: int, block: int) -> str:
        """The inverse of `space_to_batch` (`layers.batch_to_space`); `size` is the sub-images'."""
        (h, w), b = size, block
        x = self._reshape(x, [-1, b, b, channels, h, w])  # [N, i, j, C, h, w]
        x = self.node("Transpose", x, perm=[0, 3, 4, 1, 5, 2])  # [N, C, h, i, w, j]
        return self._reshape(x, [-1, channels, h * b, w * b])
