"""A model's summary as data: parameters and output shape of every block read off the traced model
(`jax.eval_shape`: nothing is allocated, so B7 takes seconds), with MACs, bytes moved and FLOPs per
byte from the analytic counts of `costs` (its docstring gives the counting rules). `python -m
effnetx_jax.cli.summary` prints it as a table.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from effnetx_jax.models import architecture, create_model
from effnetx_jax.models import costs as cost_model
from effnetx_jax.models.block_parts import Block


def _count(tree) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(tree))


def abstract_variables(model, resolution: int, batch: int = 1):
    images = jax.ShapeDtypeStruct((batch, resolution, resolution, 3), jnp.float32)
    return jax.eval_shape(lambda x: model.init({"params": jax.random.key(0)}, x), images)


def parameter_count(cfg) -> int:
    """Trainable parameters of a model config (shapes only, nothing is allocated)."""
    return _count(abstract_variables(create_model(cfg), cfg.resolution)["params"])


def block_output_shapes(model, variables, resolution: int) -> dict[str, tuple[int, ...]]:
    """Output shape of every block (batch 1), read off the traced model."""
    images = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)

    def run(variables, images):
        return model.apply(
            variables,
            images,
            capture_intermediates=lambda mdl, method: isinstance(mdl, Block) and method == "__call__",
            mutable=["intermediates"],
        )

    logits, state = jax.eval_shape(run, variables, images)
    shapes = {name: out["__call__"][0].shape for name, out in state["intermediates"].items()}
    shapes["logits"] = logits.shape
    return shapes


def _traffic(layers, batch: int, dtype_bytes: int) -> dict:
    return {
        "flops": cost_model.flops(layers, batch),
        "bytes": cost_model.bytes_moved(layers, batch, dtype_bytes),
        "intensity": round(cost_model.intensity(layers, batch, dtype_bytes), 2),
    }


def summarize(cfg, resolution: int | None = None, batch: int = 1, dtype: str | None = None) -> dict:
    """Machine-readable summary of a model config: params, MACs, traffic and one entry per block.

    `flops`, `bytes` and `intensity` are for a batch of `batch` at the element size of `dtype`
    (default: the config's compute dtype).
    """
    arch = architecture(cfg)
    resolution = resolution or arch.resolution
    dtype = dtype or cfg.dtype
    dtype_bytes = jnp.dtype(dtype).itemsize
    model = create_model(cfg)
    variables = abstract_variables(model, resolution)
    params = variables["params"]
    out_shapes = block_output_shapes(model, variables, resolution)
    blocks = []
    for cost in cost_model.block_costs(arch, resolution):
        spec = cost.spec
        name = f"blocks_{spec.index}"
        blocks.append(
            {
                "index": spec.index,
                "stage": spec.stage + 1,
                "type": spec.block_type
                + ("+s2d" if spec.space_to_depth_conv else "")
                + (f"+s2b{spec.space_to_batch}" if spec.space_to_batch else ""),
                "kernel": spec.kernel_size,
                "stride": spec.strides[0] if spec.strides[0] == spec.strides[1] else list(spec.strides),
                "expand": spec.expand_ratio,
                "in_channels": spec.input_channels,
                "expanded": spec.expanded_filters,
                "out_channels": spec.output_filters,
                "se": spec.se_filters,
                "activation": spec.activation,
                "skip": spec.has_residual,
                "output_shape": list(out_shapes[name][1:]),
                "params": _count(params[name]),
                "macs": cost.macs,
                **_traffic(cost.layers, batch, dtype_bytes),
            }
        )
    return {
        "name": cfg.name,
        "resolution": resolution,
        "params": _count(params),
        "macs": cost_model.total_macs(arch, resolution),
        "batch": batch,
        "dtype": str(jnp.dtype(dtype)),
        **_traffic(cost_model.all_layers(arch, resolution), batch, dtype_bytes),
        "stem": {"channels": arch.stem_filters, "macs": cost_model.stem_macs(arch, resolution)},
        "head": {"channels": arch.head_filters, "macs": cost_model.head_macs(arch, resolution)},
        "num_classes": arch.num_classes,
        "logits_shape": list(out_shapes["logits"]),
        "blocks": blocks,
    }
