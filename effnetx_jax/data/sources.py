"""Datasets on disk as random-access sources of encoded images: TFDS datasets in array_record, and
image folders.

`open_split(config, "train_split" | "eval_split")` returns a source of records
`{'image': encoded bytes, 'label': int}` that Grain reads by index. Images are left encoded (TFDS's
`SkipDecoding`) so that the pipeline decodes each one once, and only the part its crop needs.

- TFDS: `config.dataset` is a registered or prepared TFDS name (`imagenet2012`, `cifar10`,
  `imagenette`, the bundled `digits` ...), under `config.data_dir`; splits accept TFDS slicing
  (`train[:90%]`).
- Image folder: `config.dataset = "folder:ROOT"` reads `ROOT/<split>/<class name>/<image file>`;
  the class names (sorted subfolders of the training split's folder) give the labels 0..K-1.

tensorflow_datasets is imported inside the functions: it takes seconds and only this module's
callers need it.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os

from absl import logging

from effnetx_jax import config_files
from effnetx_jax.errors import UserError

ARRAY_RECORD = "array_record"
# Datasets of this package, built locally by their TFDS builders when first asked for.
BUILT_ON_FIRST_USE = {"digits": "effnetx_jax.data.digits", "synthetic_imagenet": "effnetx_jax.data.synthetic"}
FOLDER_PREFIX = "folder:"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


# ------------------------------------------------------------------------------------------------
# TFDS datasets
# ------------------------------------------------------------------------------------------------


def _build_command(name: str, data_dir) -> str:
    if data_dir is None:
        return f"`tfds build {name} --file_format={ARRAY_RECORD}`"
    return f"`tfds build {name} --file_format={ARRAY_RECORD} --data_dir={data_dir}`"


def ensure_prepared(name: str, data_dir: str | None = None):
    """The TFDS builder of `name`, prepared in array_record under `data_dir` (None: TFDS default).

    The datasets of this package (`digits`, `synthetic_imagenet/small|bench`) are built on first use
    (seconds, no network); any other dataset must already be prepared in array_record, which
    `tfds.data_source` and Grain's random access need. Otherwise this raises a `UserError` that says
    how to prepare or convert it.
    """
    import tensorflow_datasets as tfds

    package = BUILT_ON_FIRST_USE.get(name.split("/")[0].split(":")[0])
    if package:
        importlib.import_module(package)  # registers the builder

        builder = tfds.builder(name, data_dir=data_dir)
        if not builder.is_prepared():
            try:
                builder.download_and_prepare(file_format=ARRAY_RECORD)
            except FileExistsError:
                # Another process of the run built it at the same time and renamed its copy into place first.
                builder = tfds.builder(name, data_dir=data_dir)
                if not builder.is_prepared():
                    raise
    else:
        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except tfds.core.DatasetNotFoundError as error:
            where = data_dir or "the default TFDS data dir"
            raise UserError(
                f"dataset {name!r} is neither a registered TFDS dataset nor prepared in {where}; check "
                f"config.dataset, or prepare it with {_build_command(name, data_dir)} or in Python with "
                f"`tfds.builder(...).download_and_prepare(file_format={ARRAY_RECORD!r})`"
            ) from error
        if not builder.is_prepared():
            raise UserError(
                f"dataset {name!r} is not prepared in {builder.data_dir_root}; "
                f"prepare it with {_build_command(name, builder.data_dir_root)} or in Python with "
                f"`tfds.builder({name!r}, data_dir=...).download_and_prepare(file_format={ARRAY_RECORD!r})`"
            )
    _check_array_record(builder)
    return builder


def _check_array_record(builder) -> None:
    formats = {fmt.value for fmt in builder.info.available_file_formats()}
    if ARRAY_RECORD not in formats:
        raise UserError(
            f"dataset {builder.name!r} is prepared in {builder.data_path} as {', '.join(sorted(formats))}, "
            f"but tfds.data_source and Grain need {ARRAY_RECORD} (random access); convert it in place with "
            f"`tfds convert_format --dataset_version_dir={builder.data_path} --out_file_format={ARRAY_RECORD}` "
            f"or rebuild it with {_build_command(builder.name, builder.data_dir_root)}"
        )


def _num_examples(builder, split: str, key: str) -> int:
    """Examples in `split` (a name or a TFDS slice like 'train[:90%]'); a clear error for unknown ones."""
    try:
        return builder.info.splits[split].num_examples
    except (KeyError, ValueError, AssertionError) as error:
        available = ", ".join(sorted(builder.info.splits))
        raise config_files.config_error(
            key, f"dataset {builder.name!r} has no split {split!r}; available splits: {available}"
        ) from error


def open_split(config, key: str):
    """The source of split `config[key]` of `config.dataset`; a clear error for unknown ones."""
    if config.dataset.startswith(FOLDER_PREFIX):
        return _folder_split(_folder_root(config), config[key], key, _folder_classes(config))
    builder = ensure_prepared(config.dataset, config.data_dir)
    _num_examples(builder, config[key], key)
    return ImageLabelRecords(builder.as_data_source(split=config[key]).data_source)


class ImageLabelRecords:
    """A TFDS split's records as `{'image': encoded bytes, 'label': int}`, read from the serialized
    `tf.train.Example` of each record. TFDS's own per-record deserialisation (every feature, converted
    to numpy) takes longer than reading the record: about a tenth of a training image's preprocessing."""

    def __init__(self, serialized):
        # Imported here, where the source is opened or unpickled (a Grain worker's main thread): the first
        # import of tensorflow_datasets from a reader thread can deadlock in its lazy imports.
        from tensorflow_datasets.proto import tf_example_pb2

        self.serialized = serialized  # array_record's data source over the split's files: index -> bytes
        self._parse = tf_example_pb2.Example.FromString

    def __reduce__(self):
        return ImageLabelRecords, (self.serialized,)

    def __len__(self) -> int:
        return len(self.serialized)

    def __getitem__(self, index: int) -> dict:
        feature = self._parse(self.serialized[index]).features.feature
        return {"image": feature["image"].bytes_list.value[0], "label": feature["label"].int64_list.value[0]}


def split_size(config, key: str) -> int:
    """Examples in split `config[key]`, from the dataset's metadata (no data file is opened)."""
    if config.dataset.startswith(FOLDER_PREFIX):
        return len(open_split(config, key))
    return _num_examples(ensure_prepared(config.dataset, config.data_dir), config[key], key)


def num_classes(config) -> int:
    """The dataset's class count; a `UserError` for one with no class labels or a single class."""
    if config.dataset.startswith(FOLDER_PREFIX):
        return len(_folder_classes(config))
    count = _tfds_num_classes(ensure_prepared(config.dataset, config.data_dir))
    _check_several_classes(count, f"dataset {config.dataset!r}")
    return count


def _tfds_num_classes(builder) -> int:
    import tensorflow_datasets as tfds

    features = builder.info.features
    if "label" not in features or not isinstance(features["label"], tfds.features.ClassLabel):
        config_files.fail(
            "dataset",
            f"dataset {builder.name!r} has no 'label' class feature (its features: {', '.join(features)}); "
            "the trainer reads image/label pairs",
        )
    return features["label"].num_classes


def _check_several_classes(count: int, what: str) -> None:
    """Refuses a dataset of fewer than two classes: a softmax over one class is 1 whatever the image, so
    the loss is 0 from the first step and nothing is learned. Never meant, so an error, not a warning."""
    if count < 2:
        config_files.fail("dataset", f"{what} has {count} class(es); a classifier needs at least two")


# ------------------------------------------------------------------------------------------------
# Image folders
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ImageFolderSplit:
    """The images of one split folder, in sorted order, with their class indices."""

    paths: tuple[str, ...]
    labels: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        # The path travels with the record so that an image that cannot be decoded is logged by its file.
        with open(self.paths[index], "rb") as file:
            return {"image": file.read(), "label": self.labels[index], "path": self.paths[index]}


def _folder_root(config) -> str:
    root = config.dataset[len(FOLDER_PREFIX) :]
    if not os.path.isdir(root):
        config_files.fail("dataset", f"{config.dataset!r} names no folder ({root!r} does not exist)")
    return root


def _subfolders(path: str) -> list[str]:
    return sorted(entry.name for entry in os.scandir(path) if entry.is_dir())


@functools.cache
def _classes_in(split_dir: str) -> tuple[str, ...]:
    return tuple(_subfolders(split_dir))


def _folder_classes(config) -> tuple[str, ...]:
    """The class names: the subfolders of the training split's folder, sorted."""
    root = _folder_root(config)
    split_dir = os.path.join(root, config.train_split)
    if not os.path.isdir(split_dir):
        config_files.fail("train_split", _missing_split(root, config.train_split))
    classes = _classes_in(split_dir)
    if not classes:
        config_files.fail("dataset", f"{split_dir} has no class subfolders (expected {split_dir}/<class>/<image>)")
    _check_several_classes(len(classes), f"{split_dir} (class subfolders: {', '.join(classes)})")
    return classes


def _missing_split(root: str, split: str) -> str:
    available = ", ".join(_subfolders(root))
    return f"folder dataset {root!r} has no split {split!r}; available splits: {available}"


@functools.cache
def _folder_split(root: str, split: str, key: str, classes: tuple[str, ...]) -> ImageFolderSplit:
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
        config_files.fail(key, _missing_split(root, split))
    unknown = sorted(set(_subfolders(split_dir)) - set(classes))
    if unknown:
        config_files.fail(
            key,
            f"{split_dir} has classes the training split lacks: {', '.join(unknown)} "
            "(labels come from the training split's subfolders)",
        )
    paths, labels = [], []
    for label, name in enumerate(classes):
        class_dir = os.path.join(split_dir, name)
        if os.path.isdir(class_dir):
            files = sorted(f for f in os.listdir(class_dir) if f.lower().endswith(IMAGE_EXTENSIONS))
            if not files:
                _empty_class_folder(class_dir, key)
            paths.extend(os.path.join(class_dir, f) for f in files)
            labels.extend([label] * len(files))
    if not paths:
        config_files.fail(key, f"{split_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return ImageFolderSplit(tuple(paths), tuple(labels))


def _empty_class_folder(class_dir: str, key: str) -> None:
    """A class folder without images. In the training split it is refused: the model would get an output
    for a class it never sees, and such a folder is nearly always a copy that failed or images in a format
    not read. In the eval split it is only a warning: a held-out split may lack a class on purpose, but
    its accuracy then says nothing about that class."""
    found = f"{class_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)})"
    if key == "train_split":
        config_files.fail(key, f"{found}; every class of the training split needs some (or remove the folder)")
    logging.warning("config.%s: %s; its class is not evaluated", key, found)
