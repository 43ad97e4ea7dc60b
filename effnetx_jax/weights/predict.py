"""The most probable classes of image files (`predict`), with the weights of a directory: a converted
checkpoint (`effnetx-convert`) or a train.py workdir. The command line is `effnetx-predict`.

Each image goes through the evaluation preprocessing of DIR's config, as evaluation's
images do: a centre crop of `config.data.eval_crop_fraction` of the shorter side, resized with
`config.data.resize` to the model's resolution, normalised with `config.data.mean`/`std`. The
images run through the model as one batch, in float32.

Class names: the label names in the TFDS metadata of `config.dataset` (no data needs to be
downloaded); ImageNet's WordNet IDs (n01440764) are shown as words (tench), and a 1000-class model
whose dataset names no classes gets ImageNet's. Otherwise classes are shown as `class N`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib

import numpy as np

from effnetx_jax.errors import UserError

IMAGENET_CLASSES = 1000


class ImageError(UserError):
    """An image file that cannot be read or decoded; the message names the file."""


@dataclasses.dataclass(frozen=True)
class ClassProbability:
    """One class of a prediction: its index in the model's output, its name and its softmax probability."""

    index: int
    name: str
    probability: float


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The `top_k` classes of one image file, most probable first."""

    path: str
    top: tuple[ClassProbability, ...]


def eval_pixels(data: bytes, config) -> np.ndarray:
    """uint8 [R, R, 3]: the evaluation view of an encoded image, as the input pipeline makes it for eval.py."""
    from effnetx_jax.data import preprocessing

    return preprocessing.eval_image(
        data, config.model.resolution, float(config.data.eval_crop_fraction), preprocessing.resize_method(config)
    )


def read_pixels(paths: list[str], config) -> np.ndarray:
    """uint8 [N, R, R, 3]: the evaluation views of image files; `ImageError` names a file that fails."""
    from effnetx_jax.data import decode

    views = []
    for path in paths:
        try:
            with open(path, "rb") as file:
                data = file.read()
        except OSError as error:
            raise ImageError(f"{path}: cannot read the file: {error.strerror or error}") from error
        try:
            views.append(eval_pixels(data, config))
        except decode.UndecodableImage as error:
            raise ImageError(f"{path}: {error}") from error
    return np.stack(views)


def pixel_logits(model, config):
    """`logits(variables, pixels)`: float32 logits [N, classes] of float32 pixels [N, R, R, 3] in 0..255,
    normalised with the config's mean/std first by the function the train and eval steps use."""
    from effnetx_jax.train.steps import normalize

    def logits(variables, pixels):
        return model.apply(variables, normalize(pixels, config), train=False)

    return logits


def predict(
    directory: str, paths: list[str], *, top_k: int = 5, weights: str = "ema", step: int | None = None
) -> list[Prediction]:
    """The `top_k` most probable classes of each image file, with the weights in `directory`."""
    import jax

    from effnetx_jax import weights as weights_lib

    if not paths:
        raise UserError("no image files given")
    if top_k < 1:
        raise UserError(f"top_k must be at least 1, got {top_k}")
    config = weights_lib.read_config(directory)
    # Every image is read before the model loads, so a bad file fails in a second, not after the load.
    pixels = read_pixels(paths, config).astype(np.float32)
    model, variables = weights_lib.load(directory, weights=weights, step=step)
    logits = pixel_logits(model, config)
    probabilities = np.asarray(jax.jit(lambda v, x: jax.nn.softmax(logits(v, x)))(variables, pixels))
    names = class_names(config)
    predictions = []
    for path, row in zip(paths, probabilities, strict=True):
        # Stable sort: equal probabilities keep class order, so the output is deterministic.
        best = np.argsort(-row, kind="stable")[:top_k]
        top = tuple(ClassProbability(int(index), names[index], float(row[index])) for index in best)
        predictions.append(Prediction(path, top))
    return predictions


# ------------------------------------------------------------------------------------------------
# Class names
# ------------------------------------------------------------------------------------------------


def class_names(config) -> list[str]:
    """A name for each of the model's classes (see the module docstring)."""
    num_classes = config.model.num_classes
    names = dataset_class_names(config.dataset, config.get("data_dir"))
    if names is None or len(names) != num_classes:
        names = imagenet_wordnet_ids() if num_classes == IMAGENET_CLASSES else None
    if names is None:
        return [f"class {index}" for index in range(num_classes)]
    words = imagenet_words()
    return [words.get(name, name) for name in names]


def dataset_class_names(dataset: str, data_dir: str | None = None) -> list[str] | None:
    """The label names in the TFDS metadata of `dataset`, or None where it has none.

    Reads the builder's metadata only, which needs no prepared data. A `ClassLabel` built from a
    class count names its classes "0", "1", ...: no names.
    """
    import tensorflow_datasets as tfds

    from effnetx_jax.data import sources

    if dataset.startswith(sources.FOLDER_PREFIX):
        return None
    package = sources.BUILT_ON_FIRST_USE.get(dataset.split("/")[0].split(":")[0])
    if package:
        importlib.import_module(package)  # registers the builder
    try:
        features = tfds.builder(dataset, data_dir=data_dir).info.features
    except tfds.core.DatasetNotFoundError:
        return None
    if "label" not in features or not isinstance(features["label"], tfds.features.ClassLabel):
        return None
    names = list(features["label"].names)
    return None if names == [str(index) for index in range(len(names))] else names


@functools.cache
def imagenet_wordnet_ids() -> tuple[str, ...]:
    """ImageNet's 1000 classes in label order, as WordNet IDs (TFDS's imagenet2012 metadata)."""
    return tuple(dataset_class_names("imagenet2012"))


def imagenet_words() -> dict[str, str]:
    """WordNet ID -> the first of its words (n01440764 -> tench) for ImageNet's classes.

    The words come from the copy of ImageNet's class list that tensorflow_datasets ships with its
    SI-Score dataset (the only one in label order); a version of TFDS without it leaves the IDs.
    """
    try:
        from tensorflow_datasets.datasets.siscore.labels import IMAGENET_LABELS_LIST
    except ImportError:
        return {}
    return {wnid: words.split(",")[0] for wnid, words in zip(imagenet_wordnet_ids(), IMAGENET_LABELS_LIST, strict=True)}


def format_prediction(prediction: Prediction) -> str:
    lines = [prediction.path]
    for rank, guess in enumerate(prediction.top, start=1):
        lines.append(f"  {rank}. {guess.name} ({guess.index})  {100 * guess.probability:.2f}%")
    return "\n".join(lines)
