"""`digits`: scikit-learn's copy of the UCI handwritten digits as a TFDS dataset, built offline.

1,797 grey 8x8 images of the digits 0-9 (the UCI test set, written by 13 people), shipped inside
scikit-learn, so the quickstart needs no download. Pixels are counts 0..16 in the source and stored
as uint8 `round(v * 255 / 16)`.

Features: `image` (8, 8, 1) uint8 PNG, `label` ClassLabel(10).

Splits, fixed and stratified: within each class, the examples are permuted with
`numpy.random.default_rng(0)` and the first `round(0.8 * n_class)` of that order are `train`, the
rest `test`. (scikit-learn's order groups the 13 writers, so a split by position would test on
writers never seen in training; the 1.0.0 release did that.)

| split | examples | per class (0..9) |
|---|---:|---|
| train | 1,438 | 142 146 142 146 145 146 145 143 139 144 |
| test | 359 | 36 36 35 37 36 36 36 36 35 36 |

Writers are not recorded, so one writer's digits fall in both splits. Shuffling at write time
is disabled: each split keeps scikit-learn's order (classes interleave 0, 1, ..., 9, 0, 1, ...) and
record `i` of a split is always the same image.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

NUM_CLASSES = 10
TRAIN_FRACTION = 0.8
SPLIT_SEED = 0
SPLIT_SIZES = {"train": 1438, "test": 359}


def split_indices() -> dict[str, np.ndarray]:
    """Indices into `sklearn.datasets.load_digits()` of each split, in scikit-learn's order."""
    from sklearn.datasets import load_digits

    labels = load_digits().target
    rng = np.random.default_rng(SPLIT_SEED)
    is_train = np.zeros(len(labels), bool)
    for digit in range(NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(labels == digit))
        is_train[members[: round(TRAIN_FRACTION * len(members))]] = True
    return {"train": np.flatnonzero(is_train), "test": np.flatnonzero(~is_train)}


class Digits(tfds.core.GeneratorBasedBuilder):
    """UCI handwritten digits (8x8 grey) from scikit-learn, with a fixed stratified 80/20 split."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "First release: 1,797 digits, per-class 80/20 split by position.",
        "2.0.0": "Per-class 80/20 split of a seeded permutation, so both splits mix the writers.",
    }

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(8, 8, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits",
            # Examples keep scikit-learn's order so a split's record i is a documented image.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # the data ships with scikit-learn
        return {name: self._generate_examples(indices) for name, indices in split_indices().items()}

    def _generate_examples(self, indices):
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
        for index in indices:
            yield int(index), {"image": images[index], "label": int(digits.target[index])}
