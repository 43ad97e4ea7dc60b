"""`python -m effnetx_jax.summary NAME`: stage table, parameters, MACs and operational intensity.

Shapes and parameters come from `jax.eval_shape` (nothing is allocated, so B7 takes seconds); MACs,
bytes moved and FLOPs per byte from the analytic counts in `effnetx_jax.models.costs` (its docstring
gives the counting rules), at `--batch` images and the `--dtype` element size.
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import jax.numpy as jnp

from effnetx_jax import cli, config_files
from effnetx_jax.models import VARIANTS, architecture, create_model, model_config
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


_COLUMNS = (
    ("blk", "index", 3),
    ("stg", "stage", 3),
    ("type", "type", 11),
    ("k", "kernel", 2),
    ("s", "stride", 2),
    ("e", "expand", 2),
    ("in", "in_channels", 5),
    ("exp", "expanded", 5),
    ("out", "out_channels", 5),
    ("se", "se", 4),
    ("act", "activation", 5),
    ("skip", "skip", 5),
    ("output", "output_shape", 14),
    ("params", "params", 10),
    ("MACs", "macs", 13),
    ("MBytes", "bytes", 8),
    ("FLOP/B", "intensity", 7),
)


def format_table(summary: dict) -> str:
    header = " ".join(f"{title:>{width}}" for title, _, width in _COLUMNS)
    title = f"{summary['name']} @ {summary['resolution']}px, traffic at batch {summary['batch']} in {summary['dtype']}"
    lines = [title, header, "-" * len(header)]
    for block in summary["blocks"]:
        cells = []
        for _, key, width in _COLUMNS:
            value = block[key]
            if key == "output_shape":
                value = "x".join(map(str, value))
            elif key in ("params", "macs"):
                value = f"{value:,}"
            elif key == "bytes":
                value = f"{value / 1e6:.2f}"
            elif key == "skip":
                value = "yes" if value else "-"
            cells.append(f"{value!s:>{width}}")
        lines.append(" ".join(cells))
    lines.append(
        f"stem {summary['stem']['channels']} ch, head {summary['head']['channels']} ch, "
        f"{summary['num_classes']} classes, logits {tuple(summary['logits_shape'])}"
    )
    lines.append(
        f"params {summary['params']:,} ({summary['params'] / 1e6:.2f}M)   "
        f"MACs {summary['macs']:,} ({summary['macs'] / 1e9:.3f}B)   "
        f"bytes moved {summary['bytes'] / 1e6:.1f} MB   {summary['intensity']} FLOP/B"
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m effnetx_jax.summary", description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", help="registered model, e.g. efficientnet-x-b0")
    parser.add_argument("--all", action="store_true", help="every registered variant")
    parser.add_argument("--config", help="a config file (path.py or path.py:arg) with a model section")
    parser.add_argument("--resolution", type=int, help="input size (default: the model's own)")
    parser.add_argument("--batch", type=int, default=1, help="batch for bytes moved and FLOP/B (default 1)")
    parser.add_argument("--dtype", help="element size for bytes moved (default: the model's compute dtype)")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of tables")
    cli.add_traceback_argument(parser)
    args = parser.parse_args(argv)
    with cli.one_line_errors(args.traceback):
        return _run(args, parser)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if sum(map(bool, (args.name, args.all, args.config))) != 1:
        parser.error("give exactly one of NAME, --all or --config")
    if args.all:
        configs = [model_config(name) for name in VARIANTS]
    elif args.config:
        configs = [config_files.model_section(config_files.load_config(args.config))]
    else:
        configs = [model_config(args.name)]
    if args.batch < 1:
        parser.error(f"--batch must be >= 1, got {args.batch}")
    summaries = [summarize(cfg, args.resolution, args.batch, args.dtype) for cfg in configs]
    if args.json:
        json.dump(summaries, sys.stdout, indent=1)
        print()
    else:
        print("\n\n".join(format_table(s) for s in summaries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
