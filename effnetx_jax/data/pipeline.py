"""Grain input pipelines over the datasets of `sources` (TFDS array_record, image folders).

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

Batches are dicts of numpy arrays: `image` uint8 [b, R, R, 3] (R = `config.model.resolution`; the
steps normalise on the device), `label` int32 [b], `mask` float32 [b] (0: padding or an image that
could not be decoded) and `skipped` float32 [b] (1: an image that could not be decoded).

Parallelism: `config.data.num_workers` Grain worker processes (0: all in this process) each prepare
`config.data.prefetch_buffer_size` batches ahead, one batch per reader thread.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import grain
import numpy as np
from absl import flags

from effnetx_jax import config_files
from effnetx_jax.data import preprocessing, sources

READ_THREADS = 16  # Grain's default number of reader threads per process


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the trainer needs to know about the data; `image_shape` is what the pipeline outputs."""

    name: str
    num_classes: int
    num_train: int
    num_eval: int
    image_shape: tuple[int, int, int]


def _local_batch_size(config, key: str, process_count: int) -> int:
    global_batch = config[key]
    if global_batch < process_count or global_batch % process_count:
        config_files.fail(
            key, f"the global batch ({global_batch}) must divide evenly between the {process_count} processes"
        )
    return global_batch // process_count


def dataset_info(config) -> DatasetInfo:
    """Name, classes, split sizes and output image shape of `config.dataset` (prepares digits if needed).

    Also refuses a `config.batch_size` larger than the training split: this is the trainer's first look
    at the data, before anything is compiled (evaluation builds from the same training config and
    makes the same checks).
    """
    resolution = config.model.resolution
    num_classes = sources.num_classes(config)
    num_train = sources.split_size(config, "train_split")
    check_batch_fits(config, num_train)
    return DatasetInfo(
        name=config.dataset,
        num_classes=num_classes,
        num_train=num_train,
        num_eval=sources.split_size(config, "eval_split"),
        image_shape=(resolution, resolution, 3),
    )


def check_batch_fits(config, num_train: int) -> None:
    """Refuses a global batch larger than the training split of `num_train` examples: every batch would
    hold some images twice and an "epoch" would be shorter than a step."""
    if config.batch_size > num_train:
        config_files.fail(
            "batch_size",
            f"batch_size={config.batch_size} is larger than the training split {config.train_split!r} of "
            f"dataset {config.dataset!r}, which has {num_train} examples; use a batch_size of at most {num_train}",
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
    cut into global batches of `config.batch_size`; each example's crop, flip and augmentation draw
    from a generator seeded by `config.seed`, the epoch and the example's dataset index. Process `p`
    of `P` reads the `p`-th of the `P` equal slices of every global batch, so the global batches (and
    a run's results) do not depend on how many processes read them, nor on the worker count.
    `iter(...)` has `get_state()`/`set_state()` for the checkpoint; `start_step` positions a new
    iterator directly (for a resume with another process count).
    """
    local_batch = _local_batch_size(config, "batch_size", process_count)
    if not 0 <= config.seed < 2**32:
        config_files.fail("seed", f"Grain needs a seed in [0, 2**32), got {config.seed}")
    view = preprocessing.train_view(config)  # checks config.data.augment before any data is read
    source = sources.open_split(config, "train_split")
    check_batch_fits(config, len(source))
    # The stream of dataset indices; each batch of them is read and transformed by one `ReadBatch`.
    stream = grain.MapDataset.range(len(source)).seed(config.seed).shuffle().repeat()
    stream = stream.map_with_index(preprocessing.StreamIds())
    # Slices of global batch b are local batches b*P .. b*P + P-1 of the stream; this process's are
    # every P-th from its index. Lazy: only this process's examples are read and transformed.
    local_batches = stream.batch(local_batch)[process_index::process_count][start_step:]
    local_batches = local_batches.map(preprocessing.ReadBatch(source, view, len(source), config.train_split))
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
    view = preprocessing.eval_view(config)  # checks config.data.resize before any data is read
    source = sources.open_split(config, "eval_split")
    num_examples = len(source)
    start, stop = _contiguous_shard(num_examples, process_index, process_count)
    # Shards differ by at most one example; the largest sets the batch count of every process.
    num_batches = _ceil_div(_ceil_div(num_examples, process_count), local_batch)

    indices = grain.MapDataset.range(start, stop).map_with_index(preprocessing.StreamIds())
    # Batched before the reader threads and worker processes so that each of them prepares whole
    # batches in order, and only the last batch is partial.
    batches = indices.batch(local_batch, drop_remainder=False)
    batches = batches.map(preprocessing.ReadBatch(source, view, num_examples, config.eval_split))
    resolution = config.model.resolution
    return _padded(_prefetched(batches, config), local_batch, num_batches, (resolution, resolution, 3))


def _padded(batches, batch_size: int, num_batches: int, image_shape) -> Iterator[dict[str, np.ndarray]]:
    iterator = iter(batches)
    try:
        for _ in range(num_batches):
            batch = next(iterator, None)
            yield _pad_batch(batch, batch_size, image_shape)
    finally:
        iterator.close()


def _pad_batch(batch, batch_size: int, image_shape) -> dict[str, np.ndarray]:
    """Zero-pads a batch to `batch_size` (`mask` 0 on the padding); None gives an all-masked batch."""
    padded = preprocessing.empty_batch(batch_size, image_shape)
    if batch is not None:
        size = len(batch["label"])
        for key, values in padded.items():
            values[:size] = batch[key]
    return padded
