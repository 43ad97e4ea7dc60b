"""Grain input pipelines over TFDS datasets stored as array_record.

- `train_loader(config, process_index=, process_count=)`: an endless stream of shuffled, augmented
  batches of `config.batch_size // process_count` examples: this process's slice of every batch of
  one global stream, which depends only on the config (see the function). Its iterator has
  `get_state()`/`set_state()`: the trainer stores the state in the checkpoint so a resumed run sees
  exactly the batches it would have seen.
- `eval_batches(config, process_index=, process_count=)`: one pass over the eval split in order.
  Process `p` of `P` reads the contiguous examples `[p * n // P, (p + 1) * n // P)`, so every example
  is seen exactly once; the last batch is zero-padded to full size and `mask` marks the real
  examples; processes with fewer examples add all-masked batches so that every process yields the
  same number of batches and multi-host collectives stay in step.

Batches are dicts of numpy arrays: `image` float32 [b, R, R, 3] (R = `config.model.resolution`),
`label` int32 [b], and for evaluation `mask` float32 [b].

Parallelism: `config.data.num_workers` Grain worker processes (0: all in this process) each prepare
`config.data.prefetch_buffer_size` batches ahead; within a process, Grain's reader threads (16) read
and decode records ahead of the transforms.

tensorflow_datasets is imported inside the functions: it takes seconds and only this module's
callers need it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import grain
import numpy as np
from absl import flags

from effnetx_jax.data import preprocessing

ARRAY_RECORD = "array_record"
READ_THREADS = 16  # Grain's default number of reader threads per process


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the trainer needs to know about the data; `image_shape` is what the pipeline outputs."""

    name: str
    num_classes: int
    num_train: int
    num_eval: int
    image_shape: tuple[int, int, int]


# ------------------------------------------------------------------------------------------------
# Datasets on disk
# ------------------------------------------------------------------------------------------------


def _build_command(name: str, data_dir) -> str:
    if data_dir is None:
        return f"`tfds build {name} --file_format={ARRAY_RECORD}`"
    return f"`tfds build {name} --file_format={ARRAY_RECORD} --data_dir={data_dir}`"


def ensure_prepared(name: str, data_dir: str | None = None):
    """The TFDS builder of `name`, prepared in array_record under `data_dir` (None: TFDS default).

    `digits` is built on first use (a few seconds, from scikit-learn, no network); any other dataset
    must already be prepared in array_record, which `tfds.data_source` and Grain's random access
    need. Otherwise this raises a ValueError that says how to prepare or convert it.
    """
    import tensorflow_datasets as tfds

    if name == "digits":
        from effnetx_jax.data import digits  # noqa: F401  (importing registers the builder)

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
            raise ValueError(
                f"dataset {name!r} is neither a registered TFDS dataset nor prepared in {where}; check "
                f"config.dataset, or prepare it with {_build_command(name, data_dir)} or in Python with "
                f"`tfds.builder(...).download_and_prepare(file_format={ARRAY_RECORD!r})`"
            ) from error
        if not builder.is_prepared():
            raise ValueError(
                f"dataset {name!r} is not prepared in {builder.data_dir_root}; "
                f"prepare it with {_build_command(name, builder.data_dir_root)} or in Python with "
                f"`tfds.builder({name!r}, data_dir=...).download_and_prepare(file_format={ARRAY_RECORD!r})`"
            )
    _check_array_record(builder)
    return builder


def _check_array_record(builder) -> None:
    formats = {fmt.value for fmt in builder.info.available_file_formats()}
    if ARRAY_RECORD not in formats:
        raise ValueError(
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
        raise ValueError(
            f"config.{key}: dataset {builder.name!r} has no split {split!r}; available splits: {available}"
        ) from error


def _local_batch_size(config, key: str, process_count: int) -> int:
    global_batch = config[key]
    if global_batch < process_count or global_batch % process_count:
        raise ValueError(
            f"config.{key}: the global batch ({global_batch}) must divide evenly between the {process_count} processes"
        )
    return global_batch // process_count


def dataset_info(config) -> DatasetInfo:
    """Name, classes, split sizes and output image shape of `config.dataset` (prepares digits if needed)."""
    builder = ensure_prepared(config.dataset, config.data_dir)
    resolution = config.model.resolution
    return DatasetInfo(
        name=config.dataset,
        num_classes=builder.info.features["label"].num_classes,
        num_train=_num_examples(builder, config.train_split, "train_split"),
        num_eval=_num_examples(builder, config.eval_split, "eval_split"),
        image_shape=(resolution, resolution, 3),
    )


def _batches_ahead(config) -> int:
    """`config.data.prefetch_buffer_size`: batches prepared in advance (per worker process, if any)."""
    return max(1, config.data.prefetch_buffer_size)


def _prefetched(batches: grain.MapDataset, config) -> grain.IterDataset:
    """`batches` prepared ahead by reader threads and, with `config.data.num_workers`, worker processes."""
    ahead = _batches_ahead(config)
    read_options = grain.ReadOptions(num_threads=min(READ_THREADS, ahead), prefetch_buffer_size=ahead)
    prefetched = batches.to_iter_dataset(read_options)
    if num_workers := _worker_count(config):
        options = grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=ahead)
        prefetched = prefetched.mp_prefetch(options)
    return prefetched


def _worker_count(config) -> int:
    """`config.data.num_workers`, making sure Grain can start worker processes outside an absl app."""
    if config.data.num_workers > 0 and not flags.FLAGS.is_parsed():
        # Grain reads its absl flags when it starts workers; under pytest or in a notebook nobody has
        # parsed them and the read fails, so take their defaults (an absl app parses argv as usual).
        flags.FLAGS.mark_as_parsed()
    return config.data.num_workers


# ------------------------------------------------------------------------------------------------
# Training: endless, shuffled, sharded, checkpointable
# ------------------------------------------------------------------------------------------------


def train_loader(config, *, process_index: int = 0, process_count: int = 1, start_step: int = 0) -> grain.IterDataset:
    """This process's part of the global training stream, from global batch `start_step` on.

    The global stream is the split reshuffled every epoch with `config.seed`, repeated forever and
    cut into global batches of `config.batch_size`; each example's augmentation draws from a
    generator seeded by `config.seed` and the example's position in that stream. Process `p` of `P`
    reads the `p`-th of the `P` equal slices of every global batch, so the global batches (and a
    run's results) do not depend on how many processes read them, nor on the worker count.
    `iter(...)` has `get_state()`/`set_state()` for the checkpoint; `start_step` positions a new
    iterator directly (for a resume with another process count).
    """
    local_batch = _local_batch_size(config, "batch_size", process_count)
    if not 0 <= config.seed < 2**32:
        raise ValueError(f"config.seed: Grain needs a seed in [0, 2**32), got {config.seed}")
    builder = ensure_prepared(config.dataset, config.data_dir)
    _num_examples(builder, config.train_split, "train_split")
    stream = grain.MapDataset.source(builder.as_data_source(split=config.train_split)).seed(config.seed)
    stream = stream.shuffle().repeat()
    for transform in preprocessing.train_transforms(config):
        random = isinstance(transform, grain.transforms.RandomMap)
        stream = stream.random_map(transform) if random else stream.map(transform)
    # Slices of global batch b are local batches b*P .. b*P + P-1 of the stream; this process's are
    # every P-th from its index. Lazy: only this process's examples are read and transformed.
    local_batches = stream.batch(local_batch)[process_index::process_count][start_step:]
    return _prefetched(local_batches, config)


# ------------------------------------------------------------------------------------------------
# Evaluation: one ordered pass, every example once, padded and masked
# ------------------------------------------------------------------------------------------------


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _contiguous_shard(num_examples: int, process_index: int, process_count: int) -> tuple[int, int]:
    return num_examples * process_index // process_count, num_examples * (process_index + 1) // process_count


def eval_batches(config, *, process_index: int = 0, process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """One pass over `config.eval_split`: this process's contiguous shard, padded, with a `mask`.

    Checks run now; the data is read as the returned iterator is consumed.
    """
    local_batch = _local_batch_size(config, "eval_batch_size", process_count)
    builder = ensure_prepared(config.dataset, config.data_dir)
    num_examples = _num_examples(builder, config.eval_split, "eval_split")
    start, stop = _contiguous_shard(num_examples, process_index, process_count)
    # Shards differ by at most one example; the largest sets the batch count of every process.
    num_batches = _ceil_div(_ceil_div(num_examples, process_count), local_batch)

    dataset = grain.MapDataset.source(builder.as_data_source(split=config.eval_split))[start:stop]
    for transform in preprocessing.eval_transforms(config):
        dataset = dataset.map(transform)
    # Batched before the reader threads and worker processes so that each of them prepares whole
    # batches in order, and only the last batch is partial.
    batches = _prefetched(dataset.batch(local_batch, drop_remainder=False), config)
    resolution = config.model.resolution
    return _padded(batches, local_batch, num_batches, (resolution, resolution, 3))


def _padded(batches, batch_size: int, num_batches: int, image_shape) -> Iterator[dict[str, np.ndarray]]:
    iterator = iter(batches)
    try:
        for _ in range(num_batches):
            batch = next(iterator, None)
            yield _pad_batch(batch, batch_size, image_shape)
    finally:
        iterator.close()


def _pad_batch(batch, batch_size: int, image_shape) -> dict[str, np.ndarray]:
    """Zero-pads a batch to `batch_size` with `mask` 0 on the padding; None gives an all-masked batch."""
    padded = {
        "image": np.zeros((batch_size, *image_shape), np.float32),
        "label": np.zeros(batch_size, np.int32),
        "mask": np.zeros(batch_size, np.float32),
    }
    if batch is not None:
        size = len(batch["label"])
        padded["image"][:size] = batch["image"]
        padded["label"][:size] = batch["label"]
        padded["mask"][:size] = 1.0
    return padded
