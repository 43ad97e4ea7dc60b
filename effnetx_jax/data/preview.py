"""`python -m effnetx_jax.data.preview --config=configs/b0.py --out=grid.png [IMAGE ...]`: what training sees.

Runs the config's training view (crop, resize, flip, `config.data.augment`) on each image (default:
the two photographs that ship with scikit-learn, `china.jpg` and `flower.jpg`) for `--samples`
epochs and writes a PNG grid: one row per image, its evaluation view first, then the training
samples. Override the augmentation as any config value, e.g. `--config.data.augment='randaugment(2,17)'`.
"""

from __future__ import annotations

import os

import numpy as np
from absl import flags
from ml_collections import config_flags

from effnetx_jax import cli

_GAP = 4  # white pixels between tiles


def sample_photos() -> list[str]:
    """Paths of the real photographs bundled with scikit-learn (427x640 JPEGs)."""
    import sklearn.datasets

    folder = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images")
    return [os.path.join(folder, name) for name in ("china.jpg", "flower.jpg")]


def preview_grid(config, images: list[bytes], samples: int) -> np.ndarray:
    """uint8 grid: for each encoded image, its evaluation view then `samples` training views."""
    from effnetx_jax.data import preprocessing

    train_view, eval_view = preprocessing.train_view(config), preprocessing.eval_view(config)
    size = config.model.resolution
    rows = []
    for index, data in enumerate(images):
        tiles = [eval_view.map({"image": data, "label": 0, "index": index})["image"]]
        for epoch in range(samples):
            tiles.append(train_view.map({"image": data, "label": 0, "index": index, "epoch": epoch})["image"])
        rows.append(tiles)
    grid = np.full((len(rows) * (size + _GAP) - _GAP, (samples + 1) * (size + _GAP) - _GAP, 3), 255, np.uint8)
    for row, tiles in enumerate(rows):
        for column, tile in enumerate(tiles):
            top, left = row * (size + _GAP), column * (size + _GAP)
            grid[top : top + size, left : left + size] = tile
    return grid


def define_flags() -> None:
    """The flags of the command line. Defined when it runs, not on import: the tests import this module's
    functions in a process that runs the `main`s of convert and export, whose --config and --out these
    would clash with."""
    config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
    flags.DEFINE_string("out", None, "PNG file to write.")
    flags.DEFINE_integer("samples", 7, "Training samples per image.")
    flags.mark_flags_as_required(["config", "out"])


def main(argv):
    from PIL import Image

    values = flags.FLAGS
    paths = argv[1:] or sample_photos()
    images = []
    for path in paths:
        with open(path, "rb") as file:
            images.append(file.read())
    grid = preview_grid(cli.config_value(flags.FlagHolder(values, values["config"])), images, values.samples)
    Image.fromarray(grid).save(values.out)
    print(f"wrote {values.out}: {len(images)} image(s) x (eval view + {values.samples} training samples)")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
