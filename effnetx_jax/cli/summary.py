"""`effnetx-summary NAME` (or `python -m effnetx_jax.cli.summary NAME`): stage table, parameters, MACs and
operational intensity of a model.

  effnetx-summary efficientnet-x-b0          # one registered model
  effnetx-summary --all --json               # every registered variant
  effnetx-summary --config=my_config.py:arg  # the model section of a config file

The numbers are `effnetx_jax.models.summary.summarize`'s, at `--batch` images and the `--dtype`
element size.
"""

from __future__ import annotations

from absl import flags

from effnetx_jax import cli
from effnetx_jax.errors import UserError

_ALL = flags.DEFINE_bool("all", False, "Every registered variant.")
_CONFIG = flags.DEFINE_string("config", None, "A config file (path.py or path.py:arg) with a model section.")
_RESOLUTION = flags.DEFINE_integer("resolution", None, "Input size (default: the model's own).", lower_bound=1)
_BATCH = flags.DEFINE_integer("batch", 1, "Batch for bytes moved and FLOP/B.", lower_bound=1)
_DTYPE = flags.DEFINE_string("dtype", None, "Element size for bytes moved (default: the model's compute dtype).")
_JSON = flags.DEFINE_bool("json", False, "Print a JSON list instead of tables.")

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


def _main(argv: list[str]) -> None:
    import json

    from effnetx_jax import config_files
    from effnetx_jax.models import VARIANTS, model_config
    from effnetx_jax.models.summary import summarize

    names = argv[1:]
    if len(names) + _ALL.value + bool(_CONFIG.value) != 1:
        raise UserError("give exactly one of NAME, --all or --config")
    if _ALL.value:
        configs = [model_config(name) for name in VARIANTS]
    elif _CONFIG.value:
        configs = [config_files.model_section(config_files.load_config(_CONFIG.value))]
    else:
        configs = [model_config(names[0])]
    summaries = [summarize(config, _RESOLUTION.value, _BATCH.value, _DTYPE.value) for config in configs]
    print(json.dumps(summaries, indent=1) if _JSON.value else "\n\n".join(format_table(s) for s in summaries))


def main(argv: list[str] | None = None) -> None:
    """The `effnetx-summary` console script."""
    cli.run(_main, argv, config_flags=())


if __name__ == "__main__":
    main()
