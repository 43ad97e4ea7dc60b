"""`python -m effnetx_jax.bench NAME --batch N --mode infer|train`: measured speed on this device.

`--family F` (repeatable) measures the members of a family (`--sizes 0-3` to limit them) and
`--plot FILE` draws their latency against FLOPs. The numbers are `effnetx_jax.models.speed.benchmark`'s
(its docstring says how they are measured).
"""

from __future__ import annotations

import argparse
import json
import sys

from effnetx_jax import cli, config_files
from effnetx_jax.models import FAMILIES, family_members, model_config
from effnetx_jax.models.speed import benchmark


def _sizes(text: str) -> list[int]:
    """'0-3' or '0,2,5': family member sizes."""
    try:
        if "-" in text:
            first, last = map(int, text.split("-"))
            sizes = list(range(first, last + 1))
        else:
            sizes = [int(size) for size in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a range like 0-3 or a list like 0,2,5, got {text!r}") from None
    if not sizes or any(not 0 <= size <= 7 for size in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be within 0-7, got {text!r}")
    return sizes


def _requested(args, parser) -> list[tuple[str | None, object]]:
    """(family or None, model config) for every model the command line names."""
    if sum(map(bool, (args.names, args.config, args.family))) != 1:
        parser.error("give model NAMEs, --config or --family")
    if args.config:
        return [(None, config_files.model_section(config_files.load_config(args.config)))]
    if args.names:
        return [(None, model_config(name)) for name in args.names]
    return [
        (family, model_config(name))
        for family in args.family
        for name in family_members(family)
        if int(name.rsplit("-b", 1)[1]) in args.sizes
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m effnetx_jax.bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="registered models, e.g. efficientnet-x-b0")
    parser.add_argument("--config", help="a config file (path.py or path.py:arg) with a model section")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--mode", choices=("infer", "train"), default="infer")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument(
        "--depthwise", choices=("auto", "xla", "shifted"), default="auto", help="depthwise conv implementation"
    )
    parser.add_argument("--resolution", type=int, help="input size (default: the model's own)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps after compiling")
    parser.add_argument("--family", action="append", choices=FAMILIES, help="every member of a family (repeatable)")
    parser.add_argument("--sizes", type=_sizes, default=list(range(8)), help="family members, e.g. 0-3 (default 0-7)")
    parser.add_argument("--plot", help="with --family: write latency against FLOPs to this PNG")
    parser.add_argument("--json", action="store_true", help="print one JSON object per model")
    cli.add_traceback_argument(parser)
    args = parser.parse_args(argv)
    with cli.one_line_errors(args.traceback):
        return _run(args, parser)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    requested = _requested(args, parser)
    if args.plot and not args.family:
        parser.error("--plot needs --family")
    results = []
    for family, cfg in requested:
        cfg.dtype, cfg.depthwise_impl = args.dtype, args.depthwise
        result = benchmark(
            cfg, batch=args.batch, mode=args.mode, steps=args.steps, warmup=args.warmup, resolution=args.resolution
        )
        results.append({"family": family, **result})
        if args.json:
            print(json.dumps(results[-1]), flush=True)
        else:
            print(
                f"{result['name']:<24} {result['mode']:<5} batch {result['batch']:>4} @ {result['resolution']}px "
                f"{result['dtype']:<8} on {result['device']}: compile {result['compile_s']:.1f} s, "
                f"step median {result['median_ms']:.1f} ms (min {result['min_ms']:.1f}), "
                f"{result['images_per_s']:.1f} img/s, {result['gflops']:.2f} GFLOPs/img",
                flush=True,
            )
    if args.plot:
        from effnetx_jax import plotting

        plotting.latency_vs_flops(results, args.plot)
        print(f"wrote {args.plot}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
