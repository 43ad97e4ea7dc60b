"""`effnetx-data-preview --config=configs/b0.py --out=grid.png [IMAGE ...]` (or
`python -m effnetx_jax.cli.data_preview`): what training sees.

Runs the config's training view (crop, resize, flip, `config.data.augment`) on each image (default:
the two photographs that ship with scikit-learn, `china.jpg` and `flower.jpg`) for `--samples`
epochs and writes a PNG grid: one row per image, its evaluation view first, then the training
samples. Override the augmentation as any config value, e.g. `--config.data.augment='randaugment(2,17)'`.
"""

from absl import flags
from ml_collections import config_flags

from effnetx_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
_OUT = flags.DEFINE_string("out", None, "PNG file to write.")
_SAMPLES = flags.DEFINE_integer("samples", 7, "Training samples per image.", lower_bound=1)
flags.mark_flags_as_required(["config", "out"])


def _main(argv: list[str]) -> None:
    from PIL import Image

    from effnetx_jax.data.preview import preview_grid, sample_photos

    paths = argv[1:] or sample_photos()
    images = []
    for path in paths:
        with open(path, "rb") as file:
            images.append(file.read())
    grid = preview_grid(cli.config_value(_CONFIG), images, _SAMPLES.value)
    Image.fromarray(grid).save(_OUT.value)
    print(f"wrote {_OUT.value}: {len(images)} image(s) x (eval view + {_SAMPLES.value} training samples)")


def main(argv: list[str] | None = None) -> None:
    """The `effnetx-data-preview` console script."""
    cli.run(_main, argv)


if __name__ == "__main__":
    main()
