"""`python -m effnetx_jax.summary NAME`: stage table, parameters, MACs and operational intensity.

The numbers are `effnetx_jax.models.summary.summarize`'s, at `--batch` images and the `--dtype`
element size.
"""

from __future__ import annotations

import argparse
import json
import sys

from effnetx_jax import cli, config_files
from effnetx_jax.models import VARIANTS, model_config
from effnetx_jax.models.summary import summarize

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
