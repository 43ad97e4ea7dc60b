"""What training sees: a grid of a config's training views of real photographs (`preview_grid`), drawn by
`effnetx-data-preview`."""

from __future__ import annotations

import os

import numpy as np

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
        tiles = [eval_view.image({"image": data, "label": 0, "index": index})]
        for epoch in range(samples):
            tiles.append(train_view.image({"image": data, "label": 0, "index": index, "epoch": epoch}))
        rows.append(tiles)
    grid = np.full((len(rows) * (size + _GAP) - _GAP, (samples + 1) * (size + _GAP) - _GAP, 3), 255, np.uint8)
    for row, tiles in enumerate(rows):
        for column, tile in enumerate(tiles):
            top, left = row * (size + _GAP), column * (size + _GAP)
            grid[top : top + size, left : left + size] = tile
    return grid
