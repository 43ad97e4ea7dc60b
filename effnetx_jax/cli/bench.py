"""`effnetx-bench NAME [NAME ...] --batch N --mode infer|train` (or `python -m effnetx_jax.cli.bench`):
measured speed on this device.

`--family F` (repeatable) measures the members of a family (`--sizes 0-3` to limit them) and
`--plot FILE` draws their latency against FLOPs. The numbers are `effnetx_jax.models.speed.benchmark`'s
(its docstring says how they are measured).
"""

from __future__ import annotations

from absl import flags

from effnetx_jax import cli
from effnetx_jax.errors import UserError

_CONFIG = flags.DEFINE_string("config", None, "A config file (path.py or path.py:arg) with a model section.")
_BATCH = flags.DEFINE_integer("batch", 32, "Images per step.", lower_bound=1)
_MODE = flags.DEFINE_enum("mode", "infer", ["infer", "train"], "Inference, or a training step.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_DEPTHWISE = flags.DEFINE_enum("depthwise", "auto", ["auto", "xla", "shifted"], "Depthwise conv implementation.")
# The values of models.layers.BATCH_NORM_IMPLS and models.REMAT_MODES, written out: this module imports no
# JAX before _main (effnetx_jax/cli).
_BATCH_NORM = flags.DEFINE_enum(
    "batch_norm",
    "auto",
    ["auto", "fused", "autodiff"],
    "With --mode train: BatchNorm's gradient (config.model.batch_norm_impl).",
)
_REMAT = flags.DEFINE_enum(
    "remat", "none", ["none", "blocks", "full"], "With --mode train: what the backward pass recomputes (config.remat)."
)
_RESOLUTION = flags.DEFINE_integer("resolution", None, "Input size (default: the model's own).", lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps.", lower_bound=1)
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps after compiling.", lower_bound=0)
_FAMILY = flags.DEFINE_multi_string("family", [], "Every member of a family (repeatable), e.g. efficientnet-x.")
_SIZES = flags.DEFINE_string("sizes", "0-7", "Family members: a range like 0-3 or a list like 0,2,5.")
_PLOT = flags.DEFINE_string("plot", None, "With --family: write latency against FLOPs to this PNG.")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object per model.")


def _sizes(text: str) -> list[int]:
    """'0-3' or '0,2,5': family member sizes."""
    try:
        if "-" in text:
            first, last = map(int, text.split("-"))
            sizes = list(range(first, last + 1))
        else:
            sizes = [int(size) for size in text.split(",")]
    except ValueError:
        raise UserError(f"--sizes: expected a range like 0-3 or a list like 0,2,5, got {text!r}") from None
    if not sizes or any(not 0 <= size <= 7 for size in sizes):
        raise UserError(f"--sizes must be within 0-7, got {text!r}")
    return sizes


def _requested(names: list[str]) -> list[tuple[str | None, object]]:
    """(family or None, model config) for every model the command line names."""
    from effnetx_jax import config_files
    from effnetx_jax.models import FAMILIES, family_members, model_config

    if sum(map(bool, (names, _CONFIG.value, _FAMILY.value))) != 1:
        raise UserError("give model NAMEs, --config or --family")
    if _CONFIG.value:
        return [(None, config_files.model_section(config_files.load_config(_CONFIG.value)))]
    if names:
        return [(None, model_config(name)) for name in names]
    unknown = [family for family in _FAMILY.value if family not in FAMILIES]
    if unknown:
        raise UserError(f"--family={unknown[0]}: unknown family; families: {', '.join(FAMILIES)}")
    sizes = _sizes(_SIZES.value)
    return [
        (family, model_config(name))
        for family in _FAMILY.value
        for name in family_members(family)
        if int(name.rsplit("-b", 1)[1]) in sizes
    ]


def _main(argv: list[str]) -> None:
    import json

    from effnetx_jax.models.speed import benchmark

    requested = _requested(argv[1:])
    if _PLOT.value and not _FAMILY.value:
        raise UserError("--plot needs --family")
    results = []
    for family, config in requested:
        config.dtype, config.depthwise_impl, config.batch_norm_impl = _DTYPE.value, _DEPTHWISE.value, _BATCH_NORM.value
        result = benchmark(
            config,
            batch=_BATCH.value,
            mode=_MODE.value,
            steps=_STEPS.value,
            warmup=_WARMUP.value,
            resolution=_RESOLUTION.value,
            remat=_REMAT.value,
        )
        results.append({"family": family, **result})
        if _JSON.value:
            print(json.dumps(results[-1]), flush=True)
        else:
            print(
                f"{result['name']:<24} {result['mode']:<5} batch {result['batch']:>4} @ {result['resolution']}px "
                f"{result['dtype']:<8} on {result['device']}: compile {result['compile_s']:.1f} s, "
                f"step median {result['median_ms']:.1f} ms (min {result['min_ms']:.1f}), "
                f"{result['images_per_s']:.1f} img/s, {result['gflops']:.2f} GFLOPs/img, "
                f"memory {result['memory_bytes'] / 2**30:.3f} GiB/device",
                flush=True,
            )
    if _PLOT.value:
        from effnetx_jax.models import plots

        plots.latency_vs_flops(results, _PLOT.value)
        print(f"wrote {_PLOT.value}", flush=True)


def main(argv: list[str] | None = None) -> None:
    """The `effnetx-bench` console script."""
    cli.run(_main, argv, config_flags=())


if __name__ == "__main__":
    main()
