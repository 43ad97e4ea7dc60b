"""Measured speed of an input pipeline: images per second of the batches it yields (`effnetx-data-bench`,
`benchmarks/tfdata_preprocess.py`)."""

import time


def bench_config(
    dataset: str,
    data_dir: str | None,
    resolution: int = 224,
    batch: int = 64,
    num_workers: int = 0,
    augment: str = "",
    train_split: str = "train",
    eval_split: str = "validation",
):
    """The EfficientNet-B0 recipe's data settings at `resolution` on `dataset`, with one batch in flight
    per process: one reader thread, so `num_workers=0` is one core."""
    from effnetx_jax import recipe

    config = recipe.get_config("efficientnet-b0")
    config.model.resolution = resolution
    config.data.eval_crop_fraction = recipe.eval_crop_fraction(resolution)
    config.update(
        dataset=dataset,
        data_dir=data_dir,
        train_split=train_split,
        eval_split=eval_split,
        batch_size=batch,
        eval_batch_size=batch,
    )
    config.data.update(num_workers=num_workers, prefetch_buffer_size=1, augment=augment)
    return config


def images_per_second(batches, warmup: int, count: int) -> float:
    """Reads `warmup` batches, then times `count` more; images/s over the timed ones."""
    iterator = iter(batches)
    try:
        for _ in range(warmup):
            next(iterator)
        start, images = time.perf_counter(), 0
        for _ in range(count):
            images += len(next(iterator)["label"])
        return images / (time.perf_counter() - start)
    finally:
        if hasattr(iterator, "close"):
            iterator.close()
